"""ExecutionPlanTool: order size and timing for a signal, with Monte Carlo dropout uncertainty.

The strategic signal comes from the deployed ensemble (``signal="auto"``) or from the agent.
The server's execution network samples its dropout masks in one batched pass and returns
the size (a fraction of the maximum position) and the probability that waiting a bar fills
better, each with a mean, a standard deviation and an interval. Without an execution network
or a server, a volatility-targeting rule answers (:func:`quantcrew.tools.fallbacks.execution_fallback`),
marked degraded. When the symbol's network (or, for ``signal="auto"``, its ensemble) was
trained but rejected by its quality gate (409 ``model_gated``), the rule (or the trend rules)
answers by design: marked gated, naming the failed gate, not degraded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, field_validator

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.ml_server.schemas.ensemble import EnsemblePredictRequest
from quantcrew.ml_server.schemas.execution import DECISION_TYPES, ExecutionRequest, ExecutionResponse, StrategicSignal
from quantcrew.tools.arguments import ToolInputError, iso_date
from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.calls import CallFlow, call
from quantcrew.tools.endpoints import ENSEMBLE_PREDICT, EXECUTION_PLAN
from quantcrew.tools.ensemble import ENSEMBLE_MIN_BARS, Gated, gated_from, load_recent, train_hint
from quantcrew.tools.errors import Conflict, NotFound
from quantcrew.tools.fallbacks import ensemble_fallback, execution_fallback

__all__ = ["ExecutionPlanInput", "ExecutionPlanTool"]

_SIGNALS = ("auto", "down", "flat", "up")


class ExecutionPlanInput(BaseModel):
    """What an agent says to get an order size and timing."""

    symbol: str = Field(default="SP500", description="Market, as for the other tools.")
    lookback: int = Field(default=300, ge=ENSEMBLE_MIN_BARS, le=20_000, description="Most recent daily bars sent.")
    end_date: str | None = Field(default=None, description="Plan as of this date (YYYY-MM-DD); empty: latest.")
    decision_type: str = Field(default="entry", description="'entry', 'exit' or 'rebalance' (sets the sample count).")
    signal: str = Field(
        default="auto",
        description="'auto' asks the ensemble for the strategic signal; or give 'up', 'down' or 'flat' yourself.")
    confidence: float = Field(default=0.6, ge=0.0, le=1.0,
                              description="Probability of your signal (used only when signal is not 'auto').")

    @field_validator("end_date")
    @classmethod
    def _end_date(cls, v: str | None) -> str | None:
        return iso_date(v)


@dataclass
class _Prepared:
    bars: OHLCV
    decision_type: str
    strategic: StrategicSignal | None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Planned:
    """The plan's inputs and the network's reply, and why a rule stood in for either (degraded or gated)."""

    reply: ExecutionResponse | None
    strategic: StrategicSignal
    strategic_source: str
    degraded: list[str] = field(default_factory=list)
    gated: list[str] = field(default_factory=list)


class ExecutionPlanTool(QuantTool):
    """Size and timing of an order, with uncertainty, from the MC-dropout execution network."""

    name: str = "execution_plan"
    description: str = (
        "Turn a trading signal into an order: size (fraction of the maximum position, 0 to 1) and timing (enter "
        "now or wait a bar), from the ML server's execution network with Monte Carlo dropout uncertainty (mean, "
        "standard deviation and a 90% interval for the size and for the probability that waiting fills better). "
        "signal='auto' takes the strategic signal from the deployed ensemble. Without a trained network or a "
        "server, a volatility-targeting rule answers, marked degraded; when the trained network failed its quality "
        "gate, the rule answers by design, marked gated."
    )
    args_schema: type[BaseModel] = ExecutionPlanInput

    def _prepare(self, arguments: dict[str, Any]) -> _Prepared:
        decision = str(arguments.get("decision_type") or "entry").strip().lower()
        if decision not in DECISION_TYPES:
            raise ToolInputError(f"decision_type must be one of {', '.join(DECISION_TYPES)}, got {decision!r}")
        signal = str(arguments.get("signal") or "auto").strip().lower()
        if signal not in _SIGNALS:
            raise ToolInputError(f"signal must be one of {', '.join(_SIGNALS)}, got {signal!r}")
        raw = arguments.get("confidence")
        confidence = float(raw) if raw is not None else 0.6
        if not 0.0 <= confidence <= 1.0:
            raise ToolInputError(f"confidence must lie in [0, 1], got {confidence}")
        bars = load_recent(self, arguments, minimum=ENSEMBLE_MIN_BARS)
        strategic = None if signal == "auto" else StrategicSignal.model_validate(
            {"signal": signal, "confidence": confidence})
        return _Prepared(bars, decision, strategic)

    def _ensemble_request(self, prepared: _Prepared) -> EnsemblePredictRequest:
        return EnsemblePredictRequest.model_validate({
            "data": to_payload_dict(prepared.bars), "symbol": prepared.bars.symbol,
            "request_key": prepared.bars.symbol})

    def _execution_request(self, prepared: _Prepared, strategic: StrategicSignal) -> ExecutionRequest:
        return ExecutionRequest.model_validate({
            "signals": [strategic.model_dump()], "data": to_payload_dict(prepared.bars),
            "decision_type": prepared.decision_type, "symbol": prepared.bars.symbol})

    def _strategic_from_rules(self, prepared: _Prepared, why: str) -> tuple[StrategicSignal, str]:
        rules = ensemble_fallback(prepared.bars)
        return StrategicSignal(signal=rules["signal"], confidence=rules["confidence"],
                               predictive_entropy=rules["predictive_entropy"],
                               divergence_metric=rules["divergence_metric"],
                               agreement_score=rules["agreement_score"]), f"trend rules ({why})"

    def _strategic(self, prepared: _Prepared) -> CallFlow[tuple[StrategicSignal, str, list[str], list[str]]]:
        """The strategic signal, its source, and why a rule gave it (degraded or gated reasons)."""
        if prepared.strategic is not None:
            return prepared.strategic, "the agent", [], []
        symbol = prepared.bars.symbol
        try:
            r = yield from call(ENSEMBLE_PREDICT, self._ensemble_request(prepared))
        except NotFound as exc:
            why = f"no ensemble trained for {symbol} ({exc.message}): {train_hint(symbol)}"
            strategic, source = self._strategic_from_rules(prepared, "no ensemble trained")
            return strategic, source, [why], []
        except Conflict as exc:
            gated = gated_from(exc)
            if gated is None:
                raise
            why = gated.reason("ensemble", "the trend rules")
            strategic, source = self._strategic_from_rules(prepared, "ensemble gated")
            return strategic, source, [], [why]
        return _strategic(r), f"ensemble {r.served_by.name} v{r.served_by.version}", [], []

    def _calls(self, prepared: _Prepared) -> CallFlow[_Planned]:
        strategic, source, degraded, gated = yield from self._strategic(prepared)
        symbol = prepared.bars.symbol
        try:
            reply = yield from call(EXECUTION_PLAN, self._execution_request(prepared, strategic))
        except NotFound as exc:
            degraded = [*degraded, f"no execution network trained for {symbol} ({exc.message}): {train_hint(symbol)}"]
            return _Planned(None, strategic, source, degraded, gated)
        except Conflict as exc:
            rejected: Gated | None = gated_from(exc)
            if rejected is None:
                raise
            gated = [*gated, rejected.reason("execution network", "the volatility-target rule")]
            return _Planned(None, strategic, source, degraded, gated)
        return _Planned(reply, strategic, source, degraded, gated)

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared, planned: _Planned) -> ToolResult:
        if planned.reply is None:
            return self._rule_plan(arguments, prepared, planned.strategic, planned.strategic_source,
                                   degraded=planned.degraded, gated=planned.gated)
        reply = planned.reply
        plan = reply.plans[0]
        degraded = bool(planned.degraded)
        reason = "; ".join(planned.degraded) if degraded else None
        gated_reason = "; ".join(planned.gated) if planned.gated else None
        data: dict[str, Any] = {
            "symbol": prepared.bars.symbol, "plan": plan.model_dump(mode="json"),
            "strategic": planned.strategic.model_dump(mode="json"), "strategic_source": planned.strategic_source,
            "decision_type": reply.decision_type, "samples": reply.samples, "level": reply.level,
            "provenance": reply.model_dump(mode="json", exclude={"plans"}), "degraded": degraded,
            "gated": gated_reason is not None, "gated_reason": gated_reason,
        }
        s, w = plan.size, plan.wait_probability
        as_of = reply.as_of.date().isoformat() if reply.as_of else "?"
        summary = (
            f"{prepared.bars.symbol} {reply.decision_type} plan as of {as_of} for signal "
            f"{planned.strategic.signal.upper()} (p {planned.strategic.confidence:.2f}, "
            f"from {planned.strategic_source}): size {s.mean:.2f} of the maximum position (sd {s.std:.2f}, "
            f"{reply.level:.0%} interval {s.lower:.2f}-{s.upper:.2f}), signed target {plan.target_fraction:+.2f}; "
            f"timing {plan.timing.upper()} "
            f"(P(wait fills better) {w.mean:.2f}, sd {w.std:.2f}). MC dropout, {reply.samples} samples, model "
            f"{reply.model_id}. {_status(reason, gated_reason)}"
        )
        return ToolResult(tool=self.name, ok=True, degraded=degraded, degraded_reason=reason,
                          gated=gated_reason is not None, gated_reason=gated_reason, summary=summary,
                          arguments=arguments, data=data)

    def _fallback(self, arguments: dict[str, Any], prepared: _Prepared, reason: str) -> ToolResult:
        if prepared.strategic is not None:
            strategic, source = prepared.strategic, "the agent"
        else:
            strategic, source = self._strategic_from_rules(prepared, "server unavailable")
        return self._rule_plan(arguments, prepared, strategic, source, degraded=[reason], gated=[])

    def _rule_plan(self, arguments: dict[str, Any], prepared: _Prepared, strategic: StrategicSignal, source: str,
                   *, degraded: list[str], gated: list[str]) -> ToolResult:
        """The volatility-target rule's plan: degraded and / or gated, each with its reasons."""
        reason = "; ".join(degraded) if degraded else None
        gated_reason = "; ".join(gated) if gated else None
        try:
            result = execution_fallback(prepared.bars, strategic.signal, strategic.confidence)
        except ValueError as exc:
            return ToolResult(tool=self.name, ok=False, degraded=reason is not None, degraded_reason=reason,
                              gated=gated_reason is not None, gated_reason=gated_reason, arguments=arguments,
                              summary=f"{self.name}: no plan: {reason or gated_reason}; the rule failed too: {exc}")
        result.update(strategic=strategic.model_dump(mode="json"), strategic_source=source,
                      decision_type=prepared.decision_type, degraded=reason is not None, degraded_reason=reason,
                      gated=gated_reason is not None, gated_reason=gated_reason)
        s = result["size"]
        summary = (
            f"{prepared.bars.symbol} {prepared.decision_type} plan as of {result['as_of']} from a VOLATILITY-TARGET "
            f"RULE, not the execution network, for signal {strategic.signal.upper()} (p {strategic.confidence:.2f}, "
            f"from {source}): size {s['mean']:.2f} (range {s['lower']:.2f}-{s['upper']:.2f} over 10/20/60-bar vol), "
            f"signed target {result['target_fraction']:+.2f}, timing NOW. {_status(reason, gated_reason)}"
        )
        return ToolResult(tool=self.name, ok=True, degraded=reason is not None, degraded_reason=reason,
                          gated=gated_reason is not None, gated_reason=gated_reason, summary=summary,
                          arguments=arguments, data=result)


def _status(degraded: str | None, gated: str | None) -> str:
    """The closing words of a summary: gated (by design) and degraded (the server or a model missing)."""
    text = f"gated: {gated}. " if gated else ""
    return text + (f"degraded: true ({degraded})" if degraded else "degraded: false")


def _strategic(reply: Any) -> StrategicSignal:
    return StrategicSignal(signal=reply.signal, confidence=reply.confidence,
                           predictive_entropy=reply.predictive_entropy, divergence_metric=reply.divergence_metric,
                           agreement_score=reply.agreement_score)
