"""A crewAI agent that gets quantcrew's models as MCP tools: it imports no quantcrew tool, only a URL and a key.

Run a server with a key, then this script::

    QUANTCREW_SERVER__API_KEY=change-me-to-32-random-characters quantcrew-server &
    QUANTCREW_MCP_URL=http://127.0.0.1:8765/mcp QUANTCREW_API_KEY=change-me-to-32-random-characters \\
        python examples/crew_over_mcp.py

The agent's tools are what the server lists at ``/mcp`` (``mcps=[MCPServerHTTP(...)]``): crewAI names each
``<server>_<tool>`` and calls it over streamable HTTP, one short connection per call. The LLM here is
:class:`ToolPlanLLM`, an offline script (not a language model) that calls the planned tools one per turn and
then answers with what they returned, so the example runs without a model provider; give the agent
``crewai.LLM(model=...)`` instead and it chooses among the same tools itself.
"""

import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
from crewai import Agent, Crew, Process, Task
from crewai.llms.base_llm import BaseLLM
from crewai.mcp import MCPServerHTTP, create_static_tool_filter

from quantcrew.data import load_sample, to_payload_dict

DESK_BANDIT = "desk-agents"
"""The bandit that picks which specialised agent the desk follows in each regime (created by :func:`ensure_bandit`)."""


Arguments = dict[str, Any] | Callable[[list[str]], dict[str, Any]]
"""A planned call's arguments, or a function of the earlier calls' results (their JSON text, in order)."""


class ToolPlanLLM(BaseLLM):
    """An offline, deterministic stand-in for an LLM: calls planned tools in order, then reports their results.

    Args:
        plan: ``(tool, arguments)`` pairs, one call per turn. ``tool`` is the MCP tool's own name
            (``risk_var``); the agent offers it under crewAI's ``<server>_<tool>`` name, which is matched.
            ``arguments`` may be a function of the results so far, to pass on what an earlier tool returned.
        final_text: The first line of the final answer; every tool result follows it verbatim.
    """

    plan: list[tuple[str, Any]]
    final_text: str

    def __init__(self, plan: Sequence[tuple[str, Arguments]], final_text: str = "MCP tool results:",
                 **kwargs: Any) -> None:
        kwargs.setdefault("model", "tool-plan")
        kwargs["plan"], kwargs["final_text"] = list(plan), final_text
        super().__init__(**kwargs)

    def call(self, messages: Any, tools: list[dict[str, Any]] | None = None, callbacks: Any = None,
             available_functions: dict[str, Any] | None = None, from_task: Any = None, from_agent: Any = None,
             response_model: Any = None) -> str | list[dict[str, Any]]:
        """The next planned tool call while some are left and tools are offered; else the final answer."""
        history = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
        observations = [str(m.get("content") or "") for m in history if m.get("role") == "tool"]
        offered = [str(t["function"]["name"]) for t in tools or [] if isinstance(t, dict) and "function" in t]
        if offered and len(observations) < len(self.plan):
            name, arguments = self.plan[len(observations)]
            match = next((o for o in offered if o == name or o.endswith(f"_{name}")), None)
            if match is None:
                raise LookupError(f"the agent offers no tool {name!r}; offered: {', '.join(offered)}")
            args = arguments(observations) if callable(arguments) else arguments
            return [{"id": f"call_{len(observations)}_{name}", "type": "function",
                     "function": {"name": match, "arguments": json.dumps(args)}}]
        return "\n\n".join([self.final_text, *observations])

    def supports_function_calling(self) -> bool:
        """True: crewAI passes the tools' schemas and runs the calls returned."""
        return True

    def supports_stop_words(self) -> bool:
        """False: nothing here is free text that a stop word could cut."""
        return False

    def get_context_window_size(self) -> int:
        """Large: crewAI never summarises the tool results away."""
        return 1_000_000


def desk_plan(symbol: str = "SP500", other: str = "NASDAQ") -> list[tuple[str, Arguments]]:
    """What the desk asks the server, in order: the market regime of the latest bars, the one-day VaR of a
    60/40 book, and which specialised agent the bandit picks for that regime (from the first call's answer)."""
    bars, book = load_sample(symbol), load_sample(other)
    common, mine, theirs = np.intersect1d(bars.timestamps, book.timestamps, return_indices=True)
    closes = np.column_stack([bars.close[mine], book.close[theirs]])[-251:]
    var_request = {
        "data": {"columns": [symbol, other], "values": (closes[1:] / closes[:-1] - 1.0).tolist(),
                 "timestamps": [str(t) for t in common[-250:].astype("datetime64[s]")]},
        "weights": [0.6, 0.4], "levels": [0.99], "methods": ["historical", "parametric_normal"],
    }
    return [
        ("regime_label", {"data": to_payload_dict(bars.tail(300)), "n_states": 2, "include_probabilities": False}),
        ("risk_var", var_request),
        ("bandit_select", lambda seen: {"bandit": DESK_BANDIT, "regime": json.loads(seen[0])["current_label"]}),
    ]


def ensure_bandit(base_url: str, api_key: str | None) -> None:
    """Create the desk's bandit over REST unless it exists (an operator's step, not the agent's)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    reply = httpx.post(f"{base_url}/v1/bandit", json={"name": DESK_BANDIT}, headers=headers, timeout=30)
    if reply.status_code not in (201, 409):  # 409: it exists already
        reply.raise_for_status()


def patch_crewai_mcp_tools_for_python_311() -> None:
    """Let crewAI's MCP tools (crewAI 1.15) report their results on Python 3.11; nothing to do on 3.12 and later.

    On a thread with no event loop (every sync ``kickoff``), crewAI's ``MCPNativeTool._run`` starts the call from
    inside the ``except RuntimeError`` that caught "no running event loop". On Python 3.11 the MCP SDK's task
    group always raises a harmless error while the client disconnects (``asyncio.wait_for`` ran its entry in
    another task); crewAI skips such teardown noise, but follows the exception's context to the caught "no
    running event loop" and reports that instead: the call reached the server, yet the agent is told it failed.
    Starting the call outside that ``except`` block is the whole fix.
    """
    if sys.version_info >= (3, 12):
        return
    from crewai.tools.mcp_native_tool import MCPNativeTool

    original = MCPNativeTool._run
    if getattr(original, "outside_except", False):
        return

    def _run(self: MCPNativeTool, **kwargs: Any) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # no loop here: run the call below, outside this block
        else:
            return original(self, **kwargs)  # a loop runs here: crewAI runs the call on a thread of its own
        try:
            return asyncio.run(self._run_async(**kwargs))
        except Exception as exc:
            raise RuntimeError(f"Error executing MCP tool {self.original_tool_name}: {exc!s}") from exc

    _run.outside_except = True  # type: ignore[attr-defined]
    MCPNativeTool._run = _run  # type: ignore[method-assign]


def build_crew(url: str, api_key: str | None, llm: BaseLLM, tools: Sequence[str] | None = None) -> Crew:
    """A one-agent desk whose only tools are the server's MCP tools.

    Args:
        url: The server's ``/mcp`` URL.
        api_key: The server's key, sent as a bearer token (None for a server without one).
        llm: The agent's LLM.
        tools: The MCP tools to offer the agent (default: all the server lists, about fifty, each of whose
            schema crewAI turns into a model and the LLM reads).
    """
    patch_crewai_mcp_tools_for_python_311()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    only = create_static_tool_filter(allowed_tool_names=list(tools)) if tools else None
    desk = Agent(
        role="Macro desk lead",
        goal="Decide whether the SP500 / NASDAQ book should be cut, with numbers from the model server.",
        backstory="You run a small index book and never quote a number you did not get from a tool.",
        mcps=[MCPServerHTTP(url=url, headers=headers, tool_filter=only)],
        llm=llm, allow_delegation=False, max_iter=6, verbose=False,
    )
    check = Task(
        description="Find the SP500 market regime, get the one-day 99% VaR of a 60/40 SP500 / NASDAQ book, ask "
                    "the desk's bandit which specialised agent to follow in that regime, and say whether to cut.",
        expected_output="The regime of the last bar, the VaR, the agent chosen, and the call.",
        agent=desk,
    )
    return Crew(agents=[desk], tasks=[check], process=Process.sequential, verbose=False)


if __name__ == "__main__":
    mcp_url, key = os.environ.get("QUANTCREW_MCP_URL", "http://127.0.0.1:8765/mcp"), os.environ.get("QUANTCREW_API_KEY")
    ensure_bandit(mcp_url.removesuffix("/mcp"), key)
    plan = desk_plan()
    print(build_crew(mcp_url, key, ToolPlanLLM(plan), tools=[name for name, _ in plan]).kickoff())
