"""The LLM budget of one run: a most number of LLM calls and a most wall time, enforced.

The budget is checked before every LLM call and every tool call of the run, through CrewAI's
execution-scoped hooks (a ``contextvars`` scope, so concurrent runs in other threads keep
their own budgets). When a limit is reached the hook raises :class:`BudgetExceeded` (a CrewAI
``HookAborted``), which stops the crew; the run is then recorded with the status
``budget_exceeded`` and the limit that stopped it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from crewai.hooks.dispatch import HookAborted, InterceptionPoint, register_scoped, scoped_hooks

__all__ = ["BudgetExceeded", "RunBudget"]


class BudgetExceeded(HookAborted):  # noqa: N818 - CrewAI's abort type; the name says what happened
    """A run reached its LLM-call or wall-time limit."""


@dataclass
class RunBudget:
    """Limits of one run; ``None`` means no limit.

    Args:
        max_llm_calls: Most LLM calls the run may make (the offline planner counts too).
        max_seconds: Most wall-clock seconds from :meth:`enforce` to the last call allowed.
        clock: Monotonic clock (tests inject one).
    """

    max_llm_calls: int | None = None
    max_seconds: float | None = None
    clock: Callable[[], float] = time.monotonic
    llm_calls: int = 0
    tool_calls: int = 0
    exceeded: str | None = None
    _started: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.max_llm_calls is not None and self.max_llm_calls < 1:
            raise ValueError(f"max_llm_calls must be at least 1 (or unset), got {self.max_llm_calls}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive (or unset), got {self.max_seconds}")

    @property
    def elapsed(self) -> float:
        """Seconds since the budget started (0 before)."""
        return 0.0 if self._started is None else self.clock() - self._started

    def describe(self) -> str:
        """The limits in words."""
        calls = f"{self.max_llm_calls} LLM calls" if self.max_llm_calls is not None else "no LLM-call limit"
        wall = f"{self.max_seconds:g} s" if self.max_seconds is not None else "no time limit"
        return f"{calls}, {wall}"

    def _stop(self, why: str) -> None:
        self.exceeded = why
        raise BudgetExceeded(why, source="quantcrew.budget")

    def _check_time(self) -> None:
        if self.max_seconds is not None and self.elapsed > self.max_seconds:
            self._stop(f"wall-time budget of {self.max_seconds:g} s exceeded after {self.elapsed:.2f} s "
                       f"({self.llm_calls} LLM calls, {self.tool_calls} tool calls)")

    def before_llm_call(self, _context: Any) -> None:
        """The PRE_MODEL_CALL hook: counts the call and refuses it past a limit."""
        self._check_time()
        if self.max_llm_calls is not None and self.llm_calls >= self.max_llm_calls:
            self._stop(f"LLM-call budget of {self.max_llm_calls} exhausted after {self.elapsed:.2f} s")
        self.llm_calls += 1

    def before_tool_call(self, _context: Any) -> None:
        """The PRE_TOOL_CALL hook: refuses a tool call past the wall-time limit."""
        self._check_time()
        self.tool_calls += 1

    @contextmanager
    def enforce(self) -> Iterator[RunBudget]:
        """Start the clock and hold the hooks for the ``with`` block."""
        self._started = self.clock()
        with scoped_hooks():
            register_scoped(InterceptionPoint.PRE_MODEL_CALL, self.before_llm_call)
            register_scoped(InterceptionPoint.PRE_TOOL_CALL, self.before_tool_call)
            yield self
