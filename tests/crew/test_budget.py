"""RunBudget: LLM-call and wall-time limits, enforced through CrewAI's scoped hooks."""

from __future__ import annotations

import pytest
from crewai.hooks.dispatch import InterceptionPoint, dispatch

from quantcrew.crew.budget import BudgetExceeded, RunBudget


def test_budget_counts_llm_calls_and_stops_past_the_limit() -> None:
    budget = RunBudget(max_llm_calls=2)
    with budget.enforce():
        dispatch(InterceptionPoint.PRE_MODEL_CALL, object())
        dispatch(InterceptionPoint.PRE_MODEL_CALL, object())
        with pytest.raises(BudgetExceeded, match="LLM-call budget of 2 exhausted"):
            dispatch(InterceptionPoint.PRE_MODEL_CALL, object())
    assert budget.llm_calls == 2
    assert budget.exceeded is not None and "budget of 2" in budget.exceeded


def test_budget_wall_time_stops_llm_and_tool_calls() -> None:
    now = [0.0]
    budget = RunBudget(max_seconds=5.0, clock=lambda: now[0])
    with budget.enforce():
        dispatch(InterceptionPoint.PRE_TOOL_CALL, object())
        now[0] = 6.0
        with pytest.raises(BudgetExceeded, match="wall-time budget of 5 s exceeded after 6.00 s"):
            dispatch(InterceptionPoint.PRE_TOOL_CALL, object())
        with pytest.raises(BudgetExceeded):
            dispatch(InterceptionPoint.PRE_MODEL_CALL, object())


def test_budget_hooks_are_gone_after_the_run() -> None:
    budget = RunBudget(max_llm_calls=1)
    with budget.enforce():
        dispatch(InterceptionPoint.PRE_MODEL_CALL, object())
    for _ in range(3):  # no budget outside the with block
        dispatch(InterceptionPoint.PRE_MODEL_CALL, object())
    assert budget.llm_calls == 1


def test_budget_unlimited_never_stops() -> None:
    budget = RunBudget()
    with budget.enforce():
        for _ in range(100):
            dispatch(InterceptionPoint.PRE_MODEL_CALL, object())
    assert budget.llm_calls == 100 and budget.describe() == "no LLM-call limit, no time limit"


@pytest.mark.parametrize(("kwargs", "needle"), [({"max_llm_calls": 0}, "max_llm_calls"),
                                                ({"max_seconds": 0.0}, "max_seconds")])
def test_budget_bad_limits_are_refused(kwargs: dict[str, float], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        RunBudget(**kwargs)  # type: ignore[arg-type]
