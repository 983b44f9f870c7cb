"""PlannerLLM: the offline, deterministic planner, alone and driving a real CrewAI crew."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from crewai import Agent, Crew, Task
from crewai.tools import BaseTool
from pydantic import BaseModel, Field

from quantcrew.crew.planner_llm import PLANNER_MODEL, PLANNER_SIGNATURE, PlannerLLM
from tests.support.offline import isolate_crewai

INPUTS = {"symbol": "SP500", "lookback": 750, "horizon": 5}


class EchoStatsInput(BaseModel):
    symbol: str = Field(description="Ticker.")
    lookback: int = Field(default=10, description="Bars to look back.")


class EchoStatsTool(BaseTool):
    """Returns 'symbol:lookback' and records each call."""

    name: str = "echo_stats"
    description: str = "Echo the symbol and lookback."
    args_schema: type[BaseModel] = EchoStatsInput
    calls: list[tuple[str, int]] = Field(default_factory=list)

    def _run(self, symbol: str, lookback: int = 10) -> str:
        self.calls.append((symbol, lookback))
        return f"{symbol}:{lookback}"


class FailingInput(BaseModel):
    symbol: str


class FailingTool(BaseTool):
    name: str = "Failing Tool"
    description: str = "Always raises."
    args_schema: type[BaseModel] = FailingInput
    calls: int = 0

    def _run(self, symbol: str) -> str:
        self.calls += 1
        raise RuntimeError(f"ML server unreachable for {symbol}")


def _schema(name: str, *params: str) -> dict[str, Any]:
    properties = {param: {"type": "string"} for param in params}
    return {"type": "function", "function": {"name": name, "parameters": {"properties": properties}}}


def _prompt() -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are analyst."}, {"role": "user", "content": "Current Task: go"}]


def _with_results(calls: list[dict[str, Any]], outputs: list[str]) -> list[dict[str, Any]]:
    messages = [*_prompt(), {"role": "assistant", "content": None, "tool_calls": calls}]
    for call, output in zip(calls, outputs, strict=True):
        messages.append({"role": "tool", "tool_call_id": call["id"], "name": call["function"]["name"],
                         "content": output})
    return messages


def _args(call: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(call["function"]["arguments"]))


def _kickoff(agents: list[Agent], tasks: list[Task], inputs: dict[str, Any]) -> tuple[str, float]:
    started = time.perf_counter()
    output = Crew(agents=agents, tasks=tasks).kickoff(inputs=inputs)
    return output.raw, time.perf_counter() - started


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    return isolate_crewai(monkeypatch, tmp_path)


# --- the planner alone -------------------------------------------------------------------


def test_planner_identifies_itself_as_a_planner() -> None:
    llm = PlannerLLM(INPUTS)
    assert llm.model == PLANNER_MODEL == "quantcrew-planner"
    assert llm.is_planner is True
    assert "not a language model" in (PlannerLLM.__doc__ or "")
    assert llm.supports_function_calling() is True
    assert llm.supports_stop_words() is False
    assert llm.get_context_window_size() >= 100_000


def test_call_first_turn_calls_each_tool_once_with_matching_inputs() -> None:
    llm = PlannerLLM(INPUTS)
    calls = llm.call(_prompt(), tools=[_schema("regime", "symbol", "lookback"), _schema("risk", "symbol", "alpha")])
    assert [call["function"]["name"] for call in calls] == ["regime", "risk"]
    assert _args(calls[0]) == {"symbol": "SP500", "lookback": 750}
    assert _args(calls[1]) == {"symbol": "SP500"}  # 'alpha' has no input: omitted, the tool's default applies
    assert all(call["type"] == "function" for call in calls)
    assert len({call["id"] for call in calls}) == 2


def test_call_is_deterministic_across_instances() -> None:
    tools = [_schema("b_tool", "symbol"), _schema("a_tool", "lookback")]
    first = PlannerLLM(INPUTS).call(_prompt(), tools=tools)
    second = PlannerLLM(dict(INPUTS)).call(_prompt(), tools=tools)
    assert first == second
    assert [call["function"]["name"] for call in first] == ["b_tool", "a_tool"]  # offered order


def test_call_after_tool_results_writes_report_with_observations_verbatim() -> None:
    llm = PlannerLLM(INPUTS)
    calls = llm.call(_prompt(), tools=[_schema("regime", "symbol"), _schema("risk", "symbol")])
    report = llm.call(_with_results(calls, ["Regime: bull (p=0.91)\nDuration 40 bars", "VaR95 2.1%"]),
                      tools=[_schema("regime", "symbol"), _schema("risk", "symbol")])
    assert isinstance(report, str)
    assert "## regime\nRegime: bull (p=0.91)\nDuration 40 bars" in report
    assert "## risk\nVaR95 2.1%" in report
    assert report.index("## regime") < report.index("## risk")
    assert report.rstrip().endswith(PLANNER_SIGNATURE)
    assert "failed" not in report


def test_call_resent_conversation_after_results_never_calls_tools_again() -> None:
    llm = PlannerLLM(INPUTS)
    tools = [_schema("regime", "symbol")]
    history = _with_results(llm.call(_prompt(), tools=tools), ["bull"])
    first, again = llm.call(history, tools=tools), llm.call(list(history), tools=tools)
    assert isinstance(first, str) and first == again


def test_call_after_calls_without_results_still_finishes() -> None:
    calls = PlannerLLM(INPUTS).call(_prompt(), tools=[_schema("regime", "symbol")])
    pending = [*_prompt(), {"role": "assistant", "content": None, "tool_calls": calls}]
    answer = PlannerLLM(INPUTS).call(pending, tools=[_schema("regime", "symbol")])
    assert isinstance(answer, str) and "No tool results were received" in answer


def test_call_with_tool_error_reports_the_failure() -> None:
    llm = PlannerLLM(INPUTS)
    tools = [_schema("regime", "symbol"), _schema("risk", "symbol")]
    report = llm.call(_with_results(llm.call(_prompt(), tools=tools),
                                    ["Error executing tool: ML server unreachable", "VaR95 2.1%"]), tools=tools)
    assert "## regime (failed)\nError executing tool: ML server unreachable" in report
    assert "Errors: 1 of 2 tool calls failed (regime)." in report
    assert "## risk\nVaR95 2.1%" in report


def test_call_with_tool_plan_for_task_narrows_and_orders_tools() -> None:
    task = Task(name="regime_analysis", description="d", expected_output="e")
    llm = PlannerLLM(INPUTS, tool_plan={"regime_analysis": ["Risk Tool", "missing", "regime"]})
    calls = llm.call(_prompt(), tools=[_schema("regime", "symbol"), _schema("risk_tool", "symbol"),
                                       _schema("other", "symbol")], from_task=task)
    assert [call["function"]["name"] for call in calls] == ["risk_tool", "regime"]


def test_call_with_tool_plan_falls_back_to_agent_role_then_to_all_tools() -> None:
    agent = Agent(role="Risk Manager", goal="g", backstory="b", llm=PlannerLLM())
    tools = [_schema("regime", "symbol"), _schema("risk", "symbol")]
    llm = PlannerLLM(INPUTS, tool_plan={"Risk Manager": ["risk"]})
    assert [c["function"]["name"] for c in llm.call(_prompt(), tools=tools, from_agent=agent)] == ["risk"]
    assert [c["function"]["name"] for c in llm.call(_prompt(), tools=tools)] == ["regime", "risk"]


def test_a_role_written_as_a_folded_yaml_block_still_finds_its_tool_plan() -> None:
    agent = Agent(role="Trading Strategy Specialist\n", goal="g", backstory="b", llm=PlannerLLM())
    tools = [_schema("ensemble_signal", "symbol"), _schema("explain_signal", "symbol")]
    llm = PlannerLLM(INPUTS, tool_plan={"Trading Strategy Specialist": ["ensemble_signal"]})
    assert [c["function"]["name"] for c in llm.call(_prompt(), tools=tools, from_agent=agent)] == ["ensemble_signal"]


def test_call_skips_crewai_delegation_tools_unless_planned() -> None:
    tools = [_schema("delegate_work_to_coworker", "task", "context", "coworker"), _schema("regime", "symbol")]
    calls = PlannerLLM(INPUTS).call(_prompt(), tools=tools)
    assert [call["function"]["name"] for call in calls] == ["regime"]


def test_call_without_tools_writes_report_directly() -> None:
    answer = PlannerLLM(INPUTS).call("Summarise the market.")
    assert isinstance(answer, str)
    assert "No tool results were received" in answer and "symbol=SP500" in answer and PLANNER_SIGNATURE in answer


def test_call_with_available_functions_runs_tools_itself() -> None:
    seen: list[dict[str, Any]] = []

    def regime(**kwargs: Any) -> str:
        seen.append(kwargs)
        return "Regime: sideways"

    answer = PlannerLLM(INPUTS).call(_prompt(), tools=[_schema("regime", "symbol", "lookback")],
                                     available_functions={"regime": regime})
    assert seen == [{"symbol": "SP500", "lookback": 750}]
    assert "## regime\nRegime: sideways" in answer


async def test_acall_returns_what_call_returns() -> None:
    llm = PlannerLLM(INPUTS)
    tools = [_schema("regime", "symbol")]
    assert await llm.acall(_prompt(), tools=tools) == llm.call(_prompt(), tools=tools)


# --- the planner driving a real crew ------------------------------------------------------


@pytest.mark.e2e
def test_kickoff_calls_tool_once_with_input_values(refused: list[str]) -> None:
    tool = EchoStatsTool()
    agent = Agent(role="Regime Analyst", goal="Label regimes", backstory="Quant.", llm=PlannerLLM(INPUTS),
                  tools=[tool])
    task = Task(name="regime_analysis", description="Analyse {symbol}.", expected_output="A report.", agent=agent)
    raw, seconds = _kickoff([agent], [task], INPUTS)
    assert tool.calls == [("SP500", 750)]
    assert "## echo_stats\nSP500:750" in raw
    assert PLANNER_SIGNATURE in raw
    assert refused == []
    assert seconds < 3.0


@pytest.mark.e2e
def test_kickoff_without_matching_input_uses_tool_default(refused: list[str]) -> None:
    tool = EchoStatsTool()
    inputs = {"symbol": "NDX"}
    agent = Agent(role="Analyst", goal="g", backstory="b", llm=PlannerLLM(inputs), tools=[tool])
    task = Task(description="Analyse {symbol}.", expected_output="A report.", agent=agent)
    raw, _ = _kickoff([agent], [task], inputs)
    assert tool.calls == [("NDX", 10)]
    assert "NDX:10" in raw
    assert raw.startswith("# Planner report: Analyst")  # an unnamed task is titled by the agent's role
    assert refused == []


@pytest.mark.e2e
def test_kickoff_with_failing_tool_finishes_with_the_error(refused: list[str]) -> None:
    failing, echo = FailingTool(), EchoStatsTool()
    agent = Agent(role="Analyst", goal="g", backstory="b", llm=PlannerLLM(INPUTS), tools=[failing, echo])
    task = Task(description="Analyse {symbol}.", expected_output="A report.", agent=agent)
    raw, _ = _kickoff([agent], [task], INPUTS)
    assert failing.calls == 1 and echo.calls == [("SP500", 750)]
    assert "## failing_tool (failed)" in raw and "ML server unreachable for SP500" in raw
    assert "Errors: 1 of 2 tool calls failed (failing_tool)." in raw
    assert refused == []


@pytest.mark.e2e
def test_kickoff_two_tasks_each_call_their_own_planned_tools(refused: list[str]) -> None:
    echo, failing = EchoStatsTool(), FailingTool()
    llm = PlannerLLM(INPUTS, tool_plan={"risk": ["failing_tool"]})
    analyst = Agent(role="Analyst", goal="g", backstory="b", llm=llm, tools=[echo, failing])
    tasks = [Task(name="regime", description="Regime of {symbol}.", expected_output="r", agent=analyst),
             Task(name="risk", description="Risk of {symbol}.", expected_output="r", agent=analyst)]
    started = time.perf_counter()
    output = Crew(agents=[analyst], tasks=tasks).kickoff(inputs=INPUTS)
    assert time.perf_counter() - started < 3.0
    assert echo.calls == [("SP500", 750)]  # task 'regime': every tool; task 'risk': the planned one only
    assert failing.calls == 2
    assert "# Planner report: regime" in output.tasks_output[0].raw
    assert "# Planner report: risk" in output.raw and "echo_stats" not in output.raw
    assert refused == []


class _View(BaseModel):
    n: int


def test_planner_fans_out_a_single_symbol_tool_over_symbols() -> None:
    llm = PlannerLLM({"symbols": "SP500, NASDAQ", "lookback": 300})
    calls = llm.call(_prompt(), tools=[_schema("echo_stats", "symbol", "lookback"),
                                       _schema("risk", "symbols", "lookback")])
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("echo_stats", {"symbol": "SP500", "lookback": 300}),
        ("echo_stats", {"symbol": "NASDAQ", "lookback": 300}),
        ("risk", {"symbols": "SP500, NASDAQ", "lookback": 300}),
    ]
    assert len({c["id"] for c in calls}) == 3


def test_planner_answers_output_pydantic_with_the_structurer_json() -> None:
    task = Task(name="count", description="d", expected_output="e", output_pydantic=_View)
    llm = PlannerLLM({}, structurer=lambda model: model(n=7) if model is _View else None)
    history = [*_prompt(), {"role": "tool", "name": "echo_stats", "content": "SP500:5"}]
    assert json.loads(llm.call(history, from_task=task)) == {"n": 7}
    assert llm.call(history, response_model=_View) == _View(n=7)


def test_planner_without_structurer_keeps_the_report() -> None:
    task = Task(name="count", description="d", expected_output="e", output_pydantic=_View)
    history = [*_prompt(), {"role": "tool", "name": "echo_stats", "content": "SP500:5"}]
    answer = PlannerLLM({}).call(history, from_task=task)
    assert answer.startswith("# Planner report: count") and PLANNER_SIGNATURE in answer


def test_planner_manager_delegates_the_task_to_its_coworker() -> None:
    task = Task(name="market_regimes", description="Find the regimes.", expected_output="e")
    llm = PlannerLLM({"symbols": "SP500"}, delegation={"market_regimes": "Market Regime Analyst"})
    [call] = llm.call(_prompt(), tools=[_schema("delegate_work_to_coworker", "task", "context", "coworker")],
                      from_task=task)
    args = json.loads(call["function"]["arguments"])
    assert call["function"]["name"] == "delegate_work_to_coworker"
    assert args == {"task": "Find the regimes.", "context": "Kickoff inputs: symbols=SP500",
                    "coworker": "Market Regime Analyst"}
    # a task the map does not name is not delegated
    other = Task(name="other", description="x", expected_output="e")
    assert llm.call(_prompt(), tools=[_schema("delegate_work_to_coworker", "task", "context", "coworker")],
                    from_task=other).startswith("# Planner report")
