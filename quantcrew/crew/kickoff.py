"""``run(inputs, settings)``: one crew run, recorded in the runs store. The CLI and the
scheduler only call this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quantcrew.config.settings import Settings, apply_crewai_environment
from quantcrew.crew.crew import CREWS, build_crew, make_llm, required_inputs
from quantcrew.crew.runs import RunsStore
from quantcrew.tools.base import ToolResult
from quantcrew.tools.client import MLClient, make_client

__all__ = ["CrewRunError", "RunOutcome", "run"]


class CrewRunError(RuntimeError):
    """A crew run failed; ``run_id`` points at its record in the runs store."""

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.run_id = run_id


@dataclass
class RunOutcome:
    """What a run produced: the crew's final text and every tool's structured result."""

    run_id: str
    status: str
    output: str
    inputs: dict[str, Any]
    tool_results: list[ToolResult] = field(default_factory=list)

    @property
    def degraded(self) -> bool:
        return any(r.degraded for r in self.tool_results)


def run(inputs: dict[str, Any], settings: Settings, *, kind: str = "regime", llm: Any = None,
        client: MLClient | None = None, on_tool_result: Callable[[ToolResult], None] | None = None) -> RunOutcome:
    """Kick off one crew once and record it.

    Args:
        inputs: Kickoff inputs (``symbol``, ``lookback``...); the crew's defaults fill the rest.
        settings: The settings tree (``client.url`` must point at a running ML server, or
            the tools answer from their fallbacks and say so).
        kind: Which crew (a key of ``quantcrew.crew.crew.CREWS``: ``regime``, ``risk``).
        llm: A CrewAI LLM to use instead of the one the settings name.
        client: An ML client to use instead of one built from settings.
        on_tool_result: Called with each tool result as it arrives (progress display).

    Raises:
        CrewRunError: the crew could not be built or failed; the cause is chained.
    """
    apply_crewai_environment(settings)
    if kind not in CREWS:
        raise CrewRunError(f"no crew '{kind}'; defined: {sorted(CREWS)}")
    spec = CREWS[kind]
    full_inputs = {**spec.defaults, **{k: v for k, v in inputs.items() if v is not None}}
    missing = required_inputs(spec.task) - set(full_inputs)
    if missing:
        raise CrewRunError(f"missing kickoff inputs: {sorted(missing)}")
    chosen_llm = llm if llm is not None else make_llm(settings, full_inputs)
    store = RunsStore(settings.runs_db)
    llm_name = str(getattr(chosen_llm, "model", type(chosen_llm).__name__))
    run_id = store.start_run(kind=kind, inputs=full_inputs, llm=llm_name, server_url=settings.client.url)
    results: list[ToolResult] = []
    owned: MLClient | None = None

    def keep(result: ToolResult) -> None:
        results.append(result)
        store.record_tool_call(run_id, result)
        if on_tool_result is not None:
            on_tool_result(result)

    try:
        if client is None and settings.client.url is not None:
            # one client (one connection pool, one breaker) for every tool of the crew
            client = owned = make_client(settings.client)
        tools = spec.make_tools(settings, client=client, on_result=keep)
        crew = build_crew(kind, settings, tools=tools, llm=chosen_llm)
        output = crew.kickoff(inputs=full_inputs)
    except KeyboardInterrupt:
        store.finish_run(run_id, status="interrupted", error="interrupted by the user")
        store.close()
        raise
    except Exception as exc:  # a crew failure of any kind is recorded, then re-raised with its cause
        store.finish_run(run_id, status="failed", error=f"{type(exc).__name__}: {exc}")
        store.close()
        raise CrewRunError(f"crew run {run_id} failed: {type(exc).__name__}: {exc}", run_id=run_id) from exc
    finally:
        if owned is not None:
            owned.close()
    text = str(getattr(output, "raw", output))
    store.finish_run(run_id, status="succeeded", output=text)
    store.close()
    return RunOutcome(run_id=run_id, status="succeeded", output=text, inputs=full_inputs, tool_results=results)
