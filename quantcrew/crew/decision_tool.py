"""PortfolioDecisionTool: the crew's last step, which runs the decision pipeline.

It belongs to a run: it reads the structured results the other tools kept during that run
(regimes, agent signals, portfolio VaR), asks the bandit which agent to follow per symbol
(``agent_selection``), asks the execution plan for the size of that agent's signal
(``execution_plan``), and calls :func:`quantcrew.crew.decision.decide`. Every call it makes is
recorded like any other tool call, and the decision it returns is the one the run stores,
whatever an LLM writes afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from crewai.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from quantcrew.crew.decision import Decision, RiskLimits, decide, signal_confidence
from quantcrew.crew.views import decision_inputs, regime_view, strategy_view
from quantcrew.tools.arguments import ToolInputError, parse_names
from quantcrew.tools.base import ToolResult
from quantcrew.tools.execution import ExecutionPlanTool
from quantcrew.tools.selection import AgentSelectionTool

__all__ = ["PortfolioDecisionInput", "PortfolioDecisionTool"]


class PortfolioDecisionInput(BaseModel):
    """What the meta-orchestrator says to decide."""

    symbols: str = Field(description="Comma-separated symbols to decide on, e.g. 'SP500,NASDAQ'.")
    drawdown: float = Field(default=0.0, ge=0.0, le=1.0,
                            description="The portfolio's current drawdown from its peak (0.1 = 10%).")
    lookback: int = Field(default=750, ge=60, le=20_000, description="Daily bars for regime and sizing.")
    end_date: str | None = Field(default=None, description="Decide as of this date (YYYY-MM-DD); empty: latest.")


class PortfolioDecisionTool(BaseTool):
    """Runs the decision pipeline on what this run's tools found.

    Args:
        collected: Returns the run's tool results so far (a callable, so that the tool reads the
            run's own growing list rather than a validated copy of it).
        selection: The run's AgentSelectionTool (shares the client and the result sink).
        execution: The run's ExecutionPlanTool.
        limits: Risk limits the decision is held to.
        on_result: Called with this tool's own result.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str = "portfolio_decision"
    description: str = (
        "Decide the target position of every symbol: asks the bandit which specialised agent to follow in each "
        "symbol's regime, sizes that agent's signal with the execution plan, and applies the risk limits (max "
        "position, max gross, max VaR, drawdown stop). Call it last, after the regime, risk and strategy tools. "
        "Returns each symbol's target position, the agent followed and why, the limits that bound, the models "
        "used and whether any input was degraded."
    )
    args_schema: type[BaseModel] = PortfolioDecisionInput

    collected: Callable[[], list[ToolResult]] = Field(exclude=True)
    selection: AgentSelectionTool = Field(exclude=True)
    execution: ExecutionPlanTool = Field(exclude=True)
    limits: RiskLimits = Field(default_factory=RiskLimits, exclude=True)
    on_result: Callable[[ToolResult], None] | None = Field(default=None, exclude=True)

    _decision: Decision | None = PrivateAttr(default=None)

    @property
    def decision(self) -> Decision | None:
        """The latest decision."""
        return self._decision

    def _run(self, symbols: str, drawdown: float = 0.0, lookback: int = 750, end_date: str | None = None,
             **_: Any) -> str:
        started = time.perf_counter()
        arguments = {"symbols": symbols, "drawdown": drawdown, "lookback": lookback, "end_date": end_date}
        try:
            # called by the names given (a file path is case-sensitive); matched upper-cased, as the views key them
            given = parse_names(symbols, field="symbols")
        except ToolInputError as exc:
            return self._finish(ToolResult(tool=self.name, ok=False, summary=f"{self.name}: bad argument: {exc}",
                                           arguments=arguments), started)
        regimes = {r.symbol: r.regime for r in regime_view(self.collected()).regimes}
        signals = {s.symbol: {a.agent: a.target_position for a in s.signals}
                   for s in strategy_view(self.collected()).symbols}
        names = [n.upper() for n in given]
        for original, name in zip(given, names, strict=True):
            common = {"symbol": original, "lookback": lookback, "end_date": end_date}
            self.selection.run(**common, regime=regimes.get(name) or "auto")
            chosen = self._chosen(name)
            target = signals.get(name, {}).get(chosen) if chosen is not None else None
            if target is not None:
                signal = "up" if target > 0 else "down" if target < 0 else "flat"
                self.execution.run(**common, signal=signal, confidence=signal_confidence(target),
                                   decision_type="entry")
        decision = decide(decision_inputs(self.collected(), names, drawdown=drawdown), self.limits)
        self._decision = decision
        summary = "Decision" + (f" as of {decision.as_of}" if decision.as_of else "") + ":\n" + decision.summary()
        return self._finish(ToolResult(tool=self.name, ok=True, degraded=decision.degraded,
                                       degraded_reason="; ".join(decision.degraded_inputs) or None,
                                       gated=decision.gated, gated_reason="; ".join(decision.gated_inputs) or None,
                                       summary=summary, arguments=arguments,
                                       data=decision.model_dump(mode="json")), started)

    def _chosen(self, symbol: str) -> str | None:
        for r in reversed(self.collected()):
            named = r.arguments.get("symbol") or r.data.get("symbol") or ""
            if r.tool == "agent_selection" and r.ok and str(named).upper() == symbol:
                agent = r.data.get("agent")
                return str(agent) if agent else None
        return None

    def _finish(self, result: ToolResult, started: float) -> str:
        result.elapsed_ms = (time.perf_counter() - started) * 1000.0
        if self.on_result is not None:
            self.on_result(result)
        return result.summary
