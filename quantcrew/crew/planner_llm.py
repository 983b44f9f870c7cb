"""The crew's embedded default "LLM": an offline, deterministic planner.

``PlannerLLM`` implements CrewAI's ``BaseLLM`` interface but is not a language model: it
generates no text from a model, reads no prompt semantics and never touches the network.
It speaks CrewAI's native function-calling protocol (``supports_function_calling()`` is
true, so the agent executor passes the agent's tools as OpenAI-style schemas and runs the
tool calls this class returns):

1. first call of a task (no tool call in the conversation yet): one call to each selected
   tool, in the order the tools were offered (or the order of ``tool_plan``), with
   arguments taken from the kickoff ``inputs`` whose names match the tool's argument names
   (arguments with no matching input are left out, so the tool's defaults apply). A tool
   that takes one ``symbol`` while the inputs name several ``symbols`` (comma-separated) is
   called once per symbol;
2. any later call (tool results present): a short report with each tool's observation
   verbatim under a heading, failures stated, and a closing line naming the planner.

An agent with no tools gets the report at once (CrewAI's text protocol takes text that
names no action as the final answer). Structured output: the planner writes no JSON of its
own. When the task asks for ``output_pydantic`` (or a ``response_model`` is passed) and a
``structurer`` is set, the final answer is the model the structurer builds from the run's
tool results (``quantcrew.crew.views``), as JSON; without a structurer it is the report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from crewai.events.types.llm_events import LLMCallType
from crewai.llms.base_llm import BaseLLM, llm_call_context
from crewai.utilities.message_utils import message_content_text
from crewai.utilities.string_utils import sanitize_tool_name
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from crewai.agents.agent_builder.base_agent import BaseAgent
    from crewai.task import Task
    from crewai.tools.base_tool import BaseTool
    from crewai.utilities.types import LLMMessage

__all__ = ["PLANNER_MODEL", "PLANNER_SIGNATURE", "PlannerLLM"]

PLANNER_MODEL = "quantcrew-planner"
PLANNER_SIGNATURE = "Written by the quantcrew offline planner (deterministic; no language model was used)."

# Tools CrewAI adds to an agent by itself (delegation, memory, skills, files): never called
# unless ``tool_plan`` names them, since kickoff inputs cannot fill their arguments.
_CREWAI_INTERNAL_TOOLS = frozenset(
    sanitize_tool_name(name)
    for name in ("Delegate work to coworker", "Ask question to coworker", "Read a deferred tool result",
                 "Search memory", "Save to memory", "load_skill", "read_file")
)


class PlannerLLM(BaseLLM):
    """Offline, deterministic planner that drives a CrewAI agent; not a language model.

    It calls the agent's tools once per task with arguments matched by name from the
    kickoff inputs, then writes a structured report from the tools' observations.

    Args:
        inputs: The crew's kickoff inputs, e.g. ``{"symbol": "SP500", "lookback": 750}``.
        tool_plan: Optional narrowing: task name or agent role -> tool names to call, in
            that order. A task name takes precedence over the agent's role; a task or agent
            the plan does not mention gets every tool it is offered.
        structurer: Builds a task's structured output (a pydantic model class) from the
            run's tool results; returns None when it cannot.
        delegation: Task name -> coworker role, for a planner that manages a hierarchical
            crew: offered CrewAI's delegation tool on such a task, it delegates the task's
            description to that coworker (whose own planner turn then calls its tools).
        **kwargs: Other ``BaseLLM`` fields (rarely needed).

    Example:
        >>> llm = PlannerLLM({"symbol": "SP500", "lookback": 750})
        >>> llm.model, llm.is_planner
        ('quantcrew-planner', True)
    """

    is_planner: ClassVar[bool] = True

    llm_type: str = "planner"
    inputs: dict[str, Any] = Field(default_factory=dict)
    tool_plan: dict[str, list[str]] | None = None
    structurer: Callable[[type[BaseModel]], BaseModel | None] | None = Field(default=None, exclude=True)
    delegation: dict[str, str] = Field(default_factory=dict)

    def __init__(
        self, inputs: Mapping[str, Any] | None = None, *, tool_plan: Mapping[str, Sequence[str]] | None = None,
        structurer: Callable[[type[BaseModel]], BaseModel | None] | None = None,
        delegation: Mapping[str, str] | None = None, **kwargs: Any,
    ) -> None:
        kwargs.setdefault("model", PLANNER_MODEL)
        kwargs.setdefault("provider", "quantcrew")
        kwargs["inputs"] = dict(inputs or {})
        kwargs["tool_plan"] = {key: list(names) for key, names in tool_plan.items()} if tool_plan is not None else None
        kwargs.setdefault("structurer", structurer)
        kwargs.setdefault("delegation", dict(delegation or {}))
        super().__init__(**kwargs)

    def call(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Task | None = None,
        from_agent: BaseAgent | None = None,
        response_model: type[BaseModel] | None = None,
    ) -> str | Any:
        """Plan the next step: tool calls on a task's first turn, the report afterwards.

        Args:
            messages: The conversation so far (a string is one user message).
            tools: OpenAI-style tool schemas offered by the agent executor.
            callbacks: Unused; accepted for interface compatibility.
            available_functions: When given (callers outside the agent executor), the
                planned tools are run here and the report is returned directly.
            from_task: The task being worked on (its name is a ``tool_plan`` key).
            from_agent: The agent asking (its role is a ``tool_plan`` key).
            response_model: Structured output asked by CrewAI's converter: answered with
                the structurer's model instance when it can build one.

        Returns:
            A list of OpenAI-style tool calls, the report text (JSON of the task's
            ``output_pydantic`` when the structurer builds it), or a model instance when
            ``response_model`` was asked.
        """
        with llm_call_context():
            self._emit_call_started_event(messages=messages, tools=tools, callbacks=callbacks,
                                          available_functions=available_functions,
                                          from_task=from_task, from_agent=from_agent)
            history = self._format_messages(messages)
            self._invoke_before_llm_call_hooks(history, from_agent)
            step = self._next_step(history, tools, available_functions, from_task, from_agent)
            structured = self._structured(step, from_task, response_model) if isinstance(step, str) else step
            if isinstance(structured, BaseModel):
                self._emit_call_completed_event(response=structured.model_dump_json(),
                                                call_type=LLMCallType.LLM_CALL, from_task=from_task,
                                                from_agent=from_agent, messages=history)
                return structured
            answer: str | list[dict[str, Any]] = structured
            if isinstance(answer, str):
                answer = self._invoke_after_llm_call_hooks(history, answer, from_agent)
            call_type = LLMCallType.TOOL_CALL if isinstance(answer, list) else LLMCallType.LLM_CALL
            self._emit_call_completed_event(response=answer, call_type=call_type, from_task=from_task,
                                            from_agent=from_agent, messages=history)
            return answer

    async def acall(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None = None,
        callbacks: list[Any] | None = None,
        available_functions: dict[str, Any] | None = None,
        from_task: Task | None = None,
        from_agent: BaseAgent | None = None,
        response_model: type[BaseModel] | None = None,
    ) -> str | Any:
        """Same as :meth:`call`; planning does no I/O, so nothing is awaited."""
        return self.call(messages, tools, callbacks, available_functions, from_task, from_agent, response_model)

    def _structured(self, report: str, task: Task | None, response_model: type[BaseModel] | None) -> str | BaseModel:
        """The structurer's model for ``response_model`` (as is) or the task's ``output_pydantic`` (as JSON)."""
        if self.structurer is None:
            return report
        if response_model is not None:
            built = self.structurer(response_model)
            return built if built is not None else report
        wanted = getattr(task, "output_pydantic", None)
        if isinstance(wanted, type) and issubclass(wanted, BaseModel):
            built = self.structurer(wanted)
            if built is not None:
                return built.model_dump_json()
        return report

    def supports_function_calling(self) -> bool:
        """True: the executor passes tool schemas and runs the tool calls returned."""
        return True

    def supports_stop_words(self) -> bool:
        """False: the planner writes no free text that stop words could cut."""
        return False

    def get_context_window_size(self) -> int:
        """A large window, so CrewAI never summarises or defers tool results for the planner."""
        return 1_000_000

    def get_input_tokens_count(
        self,
        messages: str | list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None = None,
        response_model: type[BaseModel] | None = None,
    ) -> int:
        """Four characters per token, without the base class's per-call warning."""
        texts = [messages] if isinstance(messages, str) else [message_content_text(m) for m in messages]
        return (sum(len(text) for text in texts) + 3) // 4

    def _next_step(
        self,
        history: list[LLMMessage],
        tools: list[dict[str, BaseTool]] | None,
        available_functions: dict[str, Any] | None,
        task: Task | None,
        agent: BaseAgent | None,
    ) -> str | list[dict[str, Any]]:
        results = _tool_results(history)
        if results or any(message.get("tool_calls") for message in history):
            return self._report(results, task, agent)
        delegated = self._delegate(tools, task)
        calls = delegated or [call for schema in self._select(tools, task, agent) for call in self._tool_calls(schema)]
        for index, call in enumerate(calls):
            call["id"] = f"planner_call_{index}_{call['function']['name']}"
        if not calls:
            return self._report([], task, agent)
        if available_functions is None:
            return calls
        ran: list[tuple[str, str]] = []
        for call in calls:
            name, args = call["function"]["name"], json.loads(call["function"]["arguments"])
            result = self._handle_tool_execution(name, args, available_functions, task, agent)
            ran.append((name, result if result is not None else f"Error: tool '{name}' failed or is unavailable"))
        return self._report(ran, task, agent)

    def _select(
        self, tools: list[dict[str, BaseTool]] | None, task: Task | None, agent: BaseAgent | None
    ) -> list[dict[str, Any]]:
        offered: dict[str, dict[str, Any]] = {}
        for tool in tools or []:
            function = dict(tool).get("function")
            if isinstance(function, Mapping) and function.get("name"):
                offered.setdefault(str(function["name"]), dict(function))
        # keys compared stripped: a role written as a folded YAML block (``role: >``) ends in a newline
        plan = {str(key).strip(): names for key, names in (self.tool_plan or {}).items()}
        keys = [str(key).strip() for key in (getattr(task, "name", None), getattr(agent, "role", None)) if key]
        planned = next((plan[key] for key in keys if key in plan), None)
        if planned is None:
            return [schema for name, schema in offered.items() if name not in _CREWAI_INTERNAL_TOOLS]
        names = dict.fromkeys(sanitize_tool_name(name) for name in planned)
        return [offered[name] for name in names if name in offered]

    def _delegate(self, tools: list[dict[str, BaseTool]] | None, task: Task | None) -> list[dict[str, Any]]:
        """CrewAI's delegation call for a task the ``delegation`` map names, when that tool is offered."""
        coworker = self.delegation.get(str(getattr(task, "name", None) or ""))
        wanted = sanitize_tool_name("Delegate work to coworker")
        schemas: list[Any] = list(tools or [])  # OpenAI-style dicts (CrewAI types them loosely)
        offered = {str(function.get("name")) for t in schemas if isinstance(t, Mapping)
                   for function in [t.get("function")] if isinstance(function, Mapping)}
        if coworker is None or task is None or wanted not in offered:
            return []
        context = "Kickoff inputs: " + ", ".join(f"{k}={v}" for k, v in self.inputs.items())
        args = {"task": str(task.description), "context": context, "coworker": coworker}
        return [{"id": "", "type": "function", "function": {"name": wanted, "arguments": json.dumps(args)}}]

    def _tool_calls(self, schema: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One call of the tool, or one per symbol when it takes ``symbol`` and the inputs name ``symbols``."""
        parameters = schema.get("parameters")
        properties = (parameters.get("properties") or {}) if isinstance(parameters, Mapping) else {}
        args = {name: self.inputs[name] for name in properties if name in self.inputs}
        name = str(schema["name"])
        fan_out = "symbol" in properties and "symbols" not in properties and self.inputs.get("symbols")
        symbols = [s.strip() for s in str(self.inputs["symbols"]).split(",") if s.strip()] if fan_out else []
        variants = [{**args, "symbol": symbol} for symbol in symbols] or [args]
        return [{"id": "", "type": "function", "function": {"name": name, "arguments": json.dumps(v, default=str)}}
                for v in variants]

    def _report(self, results: list[tuple[str, str]], task: Task | None, agent: BaseAgent | None) -> str:
        title = getattr(task, "name", None) or getattr(agent, "role", None) or "task"
        lines = [f"# Planner report: {title}"]
        if self.inputs:
            lines.append("Inputs: " + ", ".join(f"{key}={value}" for key, value in self.inputs.items()))
        if not results:
            lines += ["", "No tool results were received for this task."]
        failed = []
        for name, observation in results:
            is_error = _looks_like_error(observation)
            if is_error:
                failed.append(name)
            lines += ["", f"## {name}" + (" (failed)" if is_error else ""), observation.strip()]
        if failed:
            lines += ["", f"Errors: {len(failed)} of {len(results)} tool calls failed ({', '.join(failed)})."]
        lines += ["", PLANNER_SIGNATURE]
        return "\n".join(lines)


def _tool_results(history: list[LLMMessage]) -> list[tuple[str, str]]:
    """(tool name, observation) for every tool result in the conversation, in order."""
    names_by_id: dict[str, str] = {}
    results: list[tuple[str, str]] = []
    for message in history:
        for call in message.get("tool_calls") or []:
            if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                names_by_id[str(call.get("id"))] = str(call["function"].get("name", "tool"))
        if message.get("role") == "tool":
            name = message.get("name") or names_by_id.get(str(message.get("tool_call_id")), "tool")
            results.append((str(name), message_content_text(message)))
    return results


def _looks_like_error(observation: str) -> bool:
    """CrewAI reports a failed tool as 'Error executing tool: ...' (or a usage/hook refusal)."""
    head = observation.lstrip().lower()
    return head.startswith(("error", "tool execution blocked")) or "has reached its usage limit" in head
