"""The decision pipeline: plain, deterministic code from tool results to a :class:`Decision`.

The crew's last step, the walk-forward backtest and the tests all call :func:`decide` with a
:class:`DecisionInputs`; nothing here does I/O, reads a clock or draws a random number. The same
inputs give the same decision: the bandit's choice arrives as an input (which arm, why, and the
evidence behind it), so exploration happens where the bandit learns, never as a coin flip here.

**Degraded and gated, once for the whole project.** Every input of a decision is one of three:

- *answered*: the model the crew asked for answered (a trained model, or a stateless fit);
- *gated*: a trained model exists, its quality gate judged it on bars it was not trained on and
  rejected it, so a named rule answered **by design**. The decision lists these in
  ``gated_inputs`` ("tool[symbol]: the failed gate and the rule that stood in"); they do not make
  the decision degraded;
- *degraded*: the model the crew asked for could not answer: the ML server unreachable or
  refusing, its circuit breaker open, or no trained model at all, so a fallback answered. The
  decision lists these in ``degraded_inputs``, and only these make ``degraded`` true (and a run
  degraded).

Per symbol, in order:

1. **direction and conviction** come from the agent the meta-orchestrator chose: its target
   position in [-1, 1] (an RL policy's, or the stated rule's). With no chosen agent (no
   selection, or the chosen agent has no signal) the mean target of all agents is used and the
   reason says so.
2. **size** comes from the execution plan made for that direction: a fraction of the maximum
   position in [0, 1]. The target is ``sign(conviction) * min(|conviction|, 1) * size *
   max_position``. Without a plan, the size is ``|conviction|`` and the reason says so.
3. **risk limits**, applied in this order and each recorded where it bound:
   - ``max_position``: the scale of every target (size 1 of the plan = ``max_position``), so no
     target exceeds it;
   - ``max_gross``: the sum of absolute targets is scaled down to at most ``max_gross``;
   - ``max_var``: the book's one-day VaR is estimated as the full-weight portfolio VaR times the
     gross exposure (a linear, conservative bound for a long-only or same-sign book); when it
     exceeds ``max_var`` every target is scaled by ``max_var / estimate``;
   - ``drawdown_stop``: when the portfolio's drawdown from its peak reaches the stop, every
     target is zero.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from quantcrew.config.settings import RiskLimitsSettings

__all__ = [
    "Decision",
    "DecisionInputs",
    "ModelOutput",
    "ModelRef",
    "RiskLimits",
    "SymbolDecision",
    "SymbolInputs",
    "decide",
    "signal_confidence",
]

Action = Literal["long", "short", "flat"]
_FLAT = 1e-9


class RiskLimits(RiskLimitsSettings):
    """The limits every decision is held to (the ``limits`` section of the settings)."""


class ModelRef(BaseModel):
    """One model (or rule) an input came from."""

    model_config = ConfigDict(extra="forbid")

    tool: str
    symbol: str | None = None
    model_id: str | None = None
    model_version: int | None = None
    method_used: str | None = None


class ModelOutput(BaseModel):
    """What one consulted model (or the rule standing in for it) said about one symbol.

    ``output`` is compact: the regime's label and probability; an agent's action, target,
    source (``rl_policy`` or ``rules``) and gated flag; the bandit's chosen arm, decision id,
    reason and evidence; the execution plan's size; the ensemble's signal.
    """

    model_config = ConfigDict(extra="forbid")

    tool: str
    model_id: str | None = None
    model_version: int | None = None
    method_used: str | None = None
    degraded: bool = Field(default=False, description="A fallback answered: the model asked for could not.")
    gated: bool = Field(default=False, description="A rule answered by design: the model failed its quality gate.")
    output: dict[str, Any] = Field(default_factory=dict)


class SymbolInputs(BaseModel):
    """What the agents found about one symbol."""

    model_config = ConfigDict(extra="forbid")

    symbol: str
    as_of: str | None = Field(default=None, description="Date of the last bar the findings saw (YYYY-MM-DD).")
    regime: str | None = None
    regime_probability: float | None = None
    agent_targets: dict[str, float] = Field(
        default_factory=dict, description="Each specialised agent's target position in [-1, 1].")
    chosen_agent: str | None = None
    selection_reason: str | None = None
    decision_id: str | None = Field(default=None, description="The bandit's id for reporting this choice's reward.")
    size: float | None = Field(default=None, ge=0.0, le=1.0,
                               description="The execution plan's size: fraction of the maximum position.")
    size_interval: tuple[float, float] | None = None
    timing: str | None = None
    consulted: list[ModelOutput] = Field(default_factory=list,
                                         description="What each model consulted for this symbol said.")

    @field_validator("agent_targets")
    @classmethod
    def _targets_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        for agent, target in v.items():
            if not math.isfinite(target) or not -1.0 <= target <= 1.0:
                raise ValueError(f"agent_targets[{agent!r}] must be a finite number in [-1, 1], got {target}")
        return v


class DecisionInputs(BaseModel):
    """Everything :func:`decide` needs: per-symbol findings, portfolio risk, provenance."""

    model_config = ConfigDict(extra="forbid")

    as_of: str | None = None
    symbols: list[SymbolInputs] = Field(min_length=1)
    portfolio_var: float | None = Field(
        default=None, ge=0.0, description="One-day 95% VaR of the full-weight portfolio (a loss, as a fraction).")
    var_method: str | None = None
    drawdown: float = Field(default=0.0, ge=0.0, le=1.0, description="Current drawdown from the portfolio's peak.")
    models: list[ModelRef] = Field(default_factory=list)
    degraded_inputs: list[str] = Field(default_factory=list,
                                       description="'tool[symbol]: reason' for every input a fallback produced.")
    gated_inputs: list[str] = Field(
        default_factory=list, description="'tool[symbol]: reason' for every input a rule gave by design, its "
                                          "model having failed its quality gate.")

    @model_validator(mode="after")
    def _unique_symbols(self) -> DecisionInputs:
        names = [s.symbol for s in self.symbols]
        if len(set(names)) != len(names):
            raise ValueError(f"symbols must be unique, got {names}")
        return self


class SymbolDecision(BaseModel):
    """The decision for one symbol, with everything needed to audit it."""

    model_config = ConfigDict(extra="forbid")

    symbol: str
    as_of: str | None = Field(default=None, description="Date of the last bar the decision saw (YYYY-MM-DD).")
    action: Action
    target_position: float = Field(description="Signed fraction of capital to hold after this decision.")
    conviction: float = Field(description="The followed agent's (or the mean) target before sizing and limits.")
    size: float = Field(description="Fraction of the maximum position used before limits.")
    followed: str = Field(description="The agent followed, or 'consensus'.")
    regime: str | None = None
    decision_id: str | None = None
    chosen_agent: str | None = Field(default=None, description="The agent the bandit chose (None: no choice).")
    agent_target: float | None = Field(
        default=None, description="The chosen agent's own target: what following it alone would hold.")
    timing: str | None = None
    why: str
    limits_applied: list[str] = Field(default_factory=list)
    consulted: list[ModelOutput] = Field(default_factory=list)


class Decision(BaseModel):
    """The crew's decision: one :class:`SymbolDecision` per symbol, the limits, the provenance."""

    model_config = ConfigDict(extra="forbid")

    as_of: str | None = None
    decisions: list[SymbolDecision]
    gross_exposure: float
    estimated_var: float | None = Field(default=None, description="One-day 95% VaR of the decided book (estimate).")
    var_method: str | None = None
    limits: RiskLimits
    drawdown: float = 0.0
    models: list[ModelRef] = Field(default_factory=list)
    degraded: bool = Field(default=False, description="True only when an input was degraded (see the module).")
    degraded_inputs: list[str] = Field(default_factory=list)
    gated: bool = Field(default=False, description="True when a rule answered by design for a gated model.")
    gated_inputs: list[str] = Field(default_factory=list)

    def target(self, symbol: str) -> float:
        """The target position of ``symbol`` (KeyError naming the decided symbols when absent)."""
        for d in self.decisions:
            if d.symbol == symbol:
                return d.target_position
        raise KeyError(f"no decision for {symbol!r}; decided: {[d.symbol for d in self.decisions]}")

    def summary(self) -> str:
        """A few lines a portfolio manager can read."""
        lines = []
        for d in self.decisions:
            limits = f"; limits: {', '.join(d.limits_applied)}" if d.limits_applied else ""
            lines.append(f"{d.symbol}: {d.action.upper()} {d.target_position:+.2f} (regime {d.regime or '?'}, "
                         f"following {d.followed}; {d.why}{limits})")
        var = f", est. 1-day VaR95 {self.estimated_var:.2%}" if self.estimated_var is not None else ""
        lines.append(f"Gross exposure {self.gross_exposure:.2f}{var}; drawdown {self.drawdown:.1%} "
                     f"(stop {self.limits.drawdown_stop:.0%}).")
        if self.gated_inputs:
            lines.append(f"GATED (rule by design): {'; '.join(self.gated_inputs)}")
        if self.degraded_inputs:
            lines.append(f"DEGRADED: {'; '.join(self.degraded_inputs)}")
        return "\n".join(lines)


def signal_confidence(target: float) -> float:
    """A three-class confidence for a target position: 1/3 (no view) at 0, 1 at |target| = 1.

    Used to ask the execution plan for the size of an agent's signal.
    """
    return 1.0 / 3.0 + 2.0 / 3.0 * min(abs(target), 1.0)


def _action(target: float) -> Action:
    return "long" if target > _FLAT else "short" if target < -_FLAT else "flat"


def _one(s: SymbolInputs, limits: RiskLimits) -> SymbolDecision:
    chosen_target = s.agent_targets.get(s.chosen_agent) if s.chosen_agent is not None else None
    if s.chosen_agent is not None and chosen_target is not None:
        followed, conviction = s.chosen_agent, chosen_target
        why = f"{s.chosen_agent} chosen" + (f" ({s.selection_reason})" if s.selection_reason else "")
    elif s.agent_targets:
        followed = "consensus"
        conviction = sum(s.agent_targets.values()) / len(s.agent_targets)
        missing = "no agent was chosen" if s.chosen_agent is None else f"{s.chosen_agent} gave no signal"
        why = f"{missing}; mean of {len(s.agent_targets)} agents' targets"
    else:
        followed, conviction, why = "consensus", 0.0, "no agent signals; flat"
    conviction = max(-1.0, min(1.0, conviction))
    if s.size is not None:
        size = s.size
        why += f"; size {size:.2f} from the execution plan"
    else:
        size = abs(conviction)
        why += "; no execution plan: size = |conviction|"
    direction = 0.0 if abs(conviction) <= _FLAT else math.copysign(1.0, conviction)
    target = direction * size * limits.max_position  # size <= 1 (validated): never past max_position
    return SymbolDecision(symbol=s.symbol, as_of=s.as_of, action=_action(target), target_position=target,
                          conviction=conviction, size=size, followed=followed, regime=s.regime,
                          decision_id=s.decision_id, chosen_agent=s.chosen_agent, agent_target=chosen_target,
                          timing=s.timing, why=why, consulted=list(s.consulted))


def _scale(decisions: list[SymbolDecision], factor: float, note: str) -> None:
    for d in decisions:
        if abs(d.target_position) > _FLAT:
            d.target_position *= factor
            d.action = _action(d.target_position)
            d.limits_applied.append(note)


def decide(inputs: DecisionInputs, limits: RiskLimits | None = None) -> Decision:
    """Turn the agents' findings into target positions under the risk limits.

    Args:
        inputs: Per-symbol regime, agent targets, chosen agent and execution size; the
            portfolio's VaR and drawdown; the models and degraded inputs behind them.
        limits: The risk limits; the defaults of :class:`RiskLimits` when omitted.

    Returns:
        The decision, deterministic in its inputs.
    """
    limits = limits or RiskLimits()
    decisions = [_one(s, limits) for s in inputs.symbols]
    gross = sum(abs(d.target_position) for d in decisions)
    if gross > limits.max_gross:
        _scale(decisions, limits.max_gross / gross, f"max_gross {limits.max_gross:g} (gross was {gross:.2f})")
        gross = limits.max_gross
    estimated = inputs.portfolio_var * gross if inputs.portfolio_var is not None else None
    if estimated is not None and estimated > limits.max_var:
        factor = limits.max_var / estimated
        _scale(decisions, factor, f"max_var {limits.max_var:.2%} (estimated {estimated:.2%}, scaled x{factor:.2f})")
        gross *= factor
        estimated = limits.max_var
    if inputs.drawdown >= limits.drawdown_stop:
        _scale(decisions, 0.0, f"drawdown_stop {limits.drawdown_stop:.0%} (drawdown {inputs.drawdown:.1%})")
        gross, estimated = 0.0, 0.0 if estimated is not None else None
    for d in decisions:
        d.target_position = round(d.target_position, 12) + 0.0  # no -0.0 in the record
    return Decision(as_of=inputs.as_of, decisions=decisions, gross_exposure=gross, estimated_var=estimated,
                    var_method=inputs.var_method, limits=limits, drawdown=inputs.drawdown, models=inputs.models,
                    degraded=bool(inputs.degraded_inputs), degraded_inputs=inputs.degraded_inputs,
                    gated=bool(inputs.gated_inputs), gated_inputs=inputs.gated_inputs)
