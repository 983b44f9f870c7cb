"""The daily flow's state: its inputs, what each step found, the decision, its outcome ids, and whether (and why)
it is degraded. crewAI persists it after every step (:mod:`quantcrew.crew.daily_flow`).

A state is plain data: it validates its inputs (a bad one is a ``ValueError`` naming the field) and
never does I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, get_args

from crewai.flow.flow import FlowState
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from quantcrew.crew.decision import Decision
from quantcrew.crew.views import RegimeView, RiskView, StrategyView
from quantcrew.tools.arguments import check_weights, iso_date, parse_floats, parse_names

__all__ = ["FAILED_STATUSES", "STEPS", "DailyState", "FlowStatus", "StepName", "StepRecord", "StepStatus"]

StepName = Literal["regime", "risk", "strategy", "decision", "outcomes"]
STEPS: tuple[StepName, ...] = get_args(StepName)
"""The flow's steps, in order."""

StepStatus = Literal["done", "degraded", "failed", "skipped"]
"""``done``: every model asked for answered; ``degraded``: the step finished but a fallback answered for a
model, or a tool could not answer (the reasons are in ``notes``); ``failed``: the step stopped with an
error; ``skipped``: an earlier step failed, so it did not run."""

FlowStatus = Literal["pending", "running", "succeeded", "degraded", "failed", "auth_failed", "budget_exceeded",
                     "interrupted"]
"""``pending``: not started; ``running``; then as a run of the runs store: ``succeeded`` (every model asked for
answered), ``degraded`` (finished with a decision, but something could not answer: see ``degraded_reasons``),
``failed``, ``auth_failed`` (the ML server refused the API key), ``budget_exceeded``, ``interrupted``."""

FAILED_STATUSES: tuple[FlowStatus, ...] = ("failed", "auth_failed", "budget_exceeded", "interrupted")
"""Statuses that stop the steps after the one that failed (resuming the flow runs them)."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class StepRecord(BaseModel):
    """How one step went."""

    model_config = ConfigDict(extra="forbid")

    step: StepName
    status: StepStatus
    started_at: str = Field(default_factory=_now, description="UTC, ISO 8601.")
    duration_s: float = 0.0
    tool_calls: int = Field(default=0, description="Tool calls the step made.")
    notes: list[str] = Field(default_factory=list, description="Why the step is degraded.")
    error: str | None = Field(default=None, description="Why the step failed.")


class DailyState(FlowState):
    """The daily flow's inputs and everything it found; crewAI's flow id is ``id``.

    Inputs (``kickoff(inputs={...})``): ``symbols`` (a list or ``"SP500,NASDAQ"``), ``as_of``
    (``YYYY-MM-DD``: decide as of that bar; None: the latest bar), ``lookback``, ``horizon_days``,
    ``drawdown``, ``weights`` (one per symbol, summing to one; default equal).
    """

    model_config = ConfigDict(extra="forbid")

    symbols: list[str] = Field(default_factory=lambda: ["SP500", "NASDAQ"])
    as_of: str | None = Field(default=None, description="Decide as of this date (YYYY-MM-DD); None: the latest bar.")
    lookback: int = Field(default=750, ge=60, le=20_000, description="Daily bars to analyse.")
    horizon_days: int = Field(default=1, ge=1, le=250, description="Horizon of the risk step's VaR.")
    drawdown: float = Field(default=0.0, ge=0.0, le=1.0, description="The portfolio's drawdown from its peak.")
    weights: list[float] | None = Field(default=None, description="Portfolio weights; None: equal.")

    run_id: str | None = Field(default=None, description="The run of the runs store holding the flow's tool calls "
                                                        "and decision.")
    status: FlowStatus = "pending"
    steps: list[StepRecord] = Field(default_factory=list, description="Every step as it ran, in order (a resumed "
                                                                      "flow adds its own).")
    regime: RegimeView | None = None
    risk: RiskView | None = None
    strategy: StrategyView | None = None
    decision: Decision | None = None
    settled: dict[str, Any] | None = Field(default=None, description="What settling earlier decisions did before "
                                                                     "this one (a SettleReport without its rows).")
    settled_outcome_ids: list[str] = Field(default_factory=list, description="Outcome ids of the earlier decisions "
                                                                             "this flow settled.")
    outcome_ids: list[str] = Field(default_factory=list, description="This decision's outcome ids (one per symbol), "
                                                                     "settled once the bar after it is known.")
    degraded: bool = False
    degraded_reasons: list[str] = Field(default_factory=list)
    error: str | None = None
    llm_calls: int = Field(default=0, description="LLM calls over every kickoff of the flow.")
    duration_s: float = Field(default=0.0, description="Wall time over every kickoff of the flow.")

    @field_validator("symbols", mode="before")
    @classmethod
    def _names(cls, value: Any) -> list[str]:
        return parse_names(value, field="symbols")

    @field_validator("as_of", mode="before")
    @classmethod
    def _date(cls, value: Any) -> str | None:
        return iso_date(str(value), field="as_of") if value is not None else None

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> list[float] | None:
        return parse_floats(value, field="weights")

    @model_validator(mode="after")
    def _weights_fit(self) -> DailyState:
        if self.weights is not None:
            check_weights(self.weights, len(self.symbols), normalize=False)
        return self

    def last(self, step: StepName) -> StepRecord | None:
        """The latest record of ``step`` (None: it never ran)."""
        return next((r for r in reversed(self.steps) if r.step == step), None)

    def completed(self, step: StepName) -> bool:
        """Whether ``step`` finished (done or degraded), so that resuming the flow keeps its answer."""
        last = self.last(step)
        return last is not None and last.status in ("done", "degraded")

    def crew_inputs(self) -> dict[str, Any]:
        """The crew's kickoff inputs for this state."""
        inputs: dict[str, Any] = {"symbols": ",".join(self.symbols), "lookback": self.lookback,
                                  "horizon_days": self.horizon_days, "drawdown": self.drawdown}
        if self.as_of is not None:
            inputs["end_date"] = self.as_of
        if self.weights is not None:
            inputs["weights"] = ",".join(f"{w:.6g}" for w in self.weights)
        return inputs

    def summary(self) -> str:
        """A few lines: the status, each step, the decision, and every reason the flow is degraded."""
        lines = [f"daily flow {self.id}: {self.status.upper()}" + (f" (run {self.run_id})" if self.run_id else "")]
        for r in self.steps:
            why = f": {r.error}" if r.error else f": {len(r.notes)} degraded input(s)" if r.notes else ""
            lines.append(f"  {r.step}: {r.status} in {r.duration_s:.1f} s, {r.tool_calls} tool call(s){why}")
        if self.decision is not None:
            lines.append(self.decision.summary())
        if self.outcome_ids:
            lines.append(f"outcome ids: {', '.join(self.outcome_ids)}")
        if self.error:
            lines.append(f"ERROR: {self.error}")
        lines += [f"DEGRADED: {reason}" for reason in self.degraded_reasons]
        return "\n".join(lines)
