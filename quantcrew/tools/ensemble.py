"""EnsembleSignalTool: the deployed ensemble's signal on a symbol, with a confidence that means something.

The server's LSTM and Transformer members (temperature-scaled, mixed by validation weights)
give a down / flat / up signal, its calibrated probability, and how much the members agree
(agreement, consensus, divergence, entropy). With no trained ensemble, or with the server
down, three trend rules stand in (:func:`quantcrew.tools.fallbacks.ensemble_fallback`) and
the answer is marked degraded. When the symbol's ensembles were trained but none passed its
quality gate (the server's 409 ``model_gated``), the same rules answer by design: the answer
is marked gated, names the failed gate and the rule, and is not degraded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, field_validator

from quantcrew.data.errors import DataError
from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.symbols import load_symbol
from quantcrew.ml_server.schemas.ensemble import EnsemblePredictRequest, EnsemblePredictResponse
from quantcrew.tools.arguments import ToolInputError, iso_date
from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.calls import CallFlow, call
from quantcrew.tools.endpoints import ENSEMBLE_PREDICT
from quantcrew.tools.errors import Conflict, NotFound
from quantcrew.tools.fallbacks import ensemble_fallback

__all__ = ["ENSEMBLE_MIN_BARS", "EnsembleSignalInput", "EnsembleSignalTool", "Gated", "gated_from", "load_recent",
           "train_hint"]

ENSEMBLE_MIN_BARS = 130  # 70 warm-up bars for the features + a window of up to 60
MODEL_GATED = "model_gated"
"""The server's error code for "trained, judged by its quality gate and rejected" (409)."""


def train_hint(symbol: str) -> str:
    """The command that trains what the crew consults for ``symbol``."""
    return f"run `quantcrew setup --symbols {symbol}`"


@dataclass(frozen=True)
class Gated:
    """A model the server judged and rejected: which one, its gate's sentence, the rule that stands in."""

    model_id: str | None
    summary: str
    rule: str | None

    def reason(self, what: str, rule: str) -> str:
        """``gated_reason``: the failed gate (its summary, which names the rule standing in) and the rule."""
        which = f" {self.model_id}" if self.model_id else ""
        text = f"{what}{which} gated by its quality gate: {self.summary}"
        return text if self.rule else f"{text}; {rule} answered by design"


def gated_from(exc: Conflict) -> Gated | None:
    """The gate a ``model_gated`` 409 names, or None for any other conflict."""
    if exc.code != MODEL_GATED:
        return None
    details = exc.details if isinstance(exc.details, dict) else {}
    gate = details.get("gate") if isinstance(details.get("gate"), dict) else None
    summary = str(gate.get("summary")) if gate and gate.get("summary") else (
        "no gate verdict recorded: no version is deployed")
    rule = str(gate["rule"]) if gate and gate.get("rule") else None
    model_id = details.get("model_id")
    return Gated(str(model_id) if model_id else None, summary, rule)


class EnsembleSignalInput(BaseModel):
    """What an agent says to ask the ensemble for a signal."""

    symbol: str = Field(
        default="SP500",
        description="Market: a bundled series (SP500, NASDAQ, VIX, CRUDE), a symbol with a CSV/Parquet file in the "
                    "data folder, or a file path.",
    )
    lookback: int = Field(default=300, ge=ENSEMBLE_MIN_BARS, le=20_000,
                          description=f"Most recent daily bars sent (at least {ENSEMBLE_MIN_BARS}).")
    end_date: str | None = Field(default=None, description="Signal as of this date (YYYY-MM-DD); empty: latest.")
    method: str = Field(
        default="ensemble",
        description="'ensemble' (all members, fast) or 'mc_dropout' (one member sampled with dropout, slower).",
    )

    @field_validator("end_date")
    @classmethod
    def _end_date(cls, v: str | None) -> str | None:
        return iso_date(v)


def load_recent(tool: QuantTool, arguments: dict[str, Any], *, minimum: int) -> OHLCV:
    """The symbol's bars up to ``end_date``, the last ``lookback`` of them; DataError when too few."""
    data = tool._settings().data
    bars = load_symbol(str(arguments.get("symbol") or "SP500"), data_dir=data.data_dir,
                       max_gap_days=data.max_gap_days)
    if arguments.get("end_date"):
        bars = bars.between(None, arguments["end_date"])
    lookback = int(arguments.get("lookback") or 300)
    if lookback < minimum:
        raise ToolInputError(f"lookback must be at least {minimum} bars")
    bars = bars.tail(lookback) if len(bars) else bars
    if len(bars) < minimum:
        raise DataError(bars.symbol, f"only {len(bars)} bars up to the end date; at least {minimum} are needed")
    return bars


@dataclass(frozen=True)
class _Prepared:
    bars: OHLCV
    request: EnsemblePredictRequest


class EnsembleSignalTool(QuantTool):
    """Signal, calibrated confidence and uncertainty of the deployed LSTM + Transformer ensemble."""

    name: str = "ensemble_signal"
    description: str = (
        "Ask the ML server's deployed LSTM + Transformer ensemble for a symbol's next-move signal (down, flat or "
        "up over the model's horizon) from bars up to the last one only. Returns the signal, its calibrated "
        "probability (when it says 70%, it has been right about 70% of the time out of sample), the probability "
        "of each class, and the uncertainty: agreement_score (share of members agreeing), consensus_strength, "
        "divergence_metric (members contradicting each other) and predictive_entropy, with the version that "
        "answered. Without a trained ensemble or a server, three trend rules answer instead, marked degraded; when "
        "the trained ensemble failed its quality gate, the same rules answer by design, marked gated."
    )
    args_schema: type[BaseModel] = EnsembleSignalInput

    def _prepare(self, arguments: dict[str, Any]) -> _Prepared:
        method = str(arguments.get("method") or "ensemble").strip().lower().replace("-", "_")
        if method not in ("ensemble", "mc_dropout"):
            raise ToolInputError(f"method must be 'ensemble' or 'mc_dropout', got {arguments.get('method')!r}")
        bars = load_recent(self, arguments, minimum=ENSEMBLE_MIN_BARS)
        request = EnsemblePredictRequest.model_validate({
            "data": to_payload_dict(bars), "symbol": bars.symbol, "method": method, "request_key": bars.symbol,
        })
        return _Prepared(bars, request)

    def _calls(self, prepared: _Prepared) -> CallFlow[EnsemblePredictResponse | Gated | str]:
        try:
            return (yield from call(ENSEMBLE_PREDICT, prepared.request))
        except NotFound as exc:
            symbol = prepared.bars.symbol
            return f"no ensemble trained for {symbol} ({exc.message}): {train_hint(symbol)}"
        except Conflict as exc:
            gated = gated_from(exc)
            if gated is None:
                raise
            return gated

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared,
                reply: EnsemblePredictResponse | Gated | str) -> ToolResult:
        if isinstance(reply, str):
            return self._fallback(arguments, prepared, reply)
        if isinstance(reply, Gated):
            return self._rules(arguments, prepared, gated=reply)
        as_of = reply.as_of.date().isoformat() if reply.as_of else "?"
        served = reply.served_by
        data = reply.model_dump(mode="json", exclude={"points"})
        data.update(symbol=prepared.bars.symbol, degraded=False)
        probs = ", ".join(f"{k} {v:.2f}" for k, v in reply.probabilities.items())
        sources = ", ".join(f"{s.source} x{s.members} w={s.weight:.2f}" for s in reply.sources)
        summary = (
            f"{prepared.bars.symbol} ensemble signal as of {as_of} over the next {reply.horizon} bars: "
            f"{reply.signal.upper()} with calibrated probability {reply.confidence:.2f} ({probs}). "
            f"Uncertainty: agreement {reply.agreement_score:.2f}, consensus {reply.consensus_strength:.2f}, "
            f"divergence {reply.divergence_metric:.2f}, entropy {reply.predictive_entropy:.2f}. "
            f"Method {reply.method_used} ({sources}); answered by {served.name} v{served.version} "
            f"({served.variant}, {served.model_id}); data {reply.data_hash[:19]}. degraded: false"
        )
        return ToolResult(tool=self.name, ok=True, summary=summary, arguments=arguments, data=data)

    def _fallback(self, arguments: dict[str, Any], prepared: _Prepared, reason: str) -> ToolResult:
        return self._rules(arguments, prepared, degraded=reason)

    def _rules(self, arguments: dict[str, Any], prepared: _Prepared, *, degraded: str | None = None,
               gated: Gated | None = None) -> ToolResult:
        """The trend rules' answer: degraded (the server could not answer) or gated (the ensemble was rejected)."""
        gated_reason = gated.reason("ensemble", "the trend rules") if gated is not None else None
        try:
            result = ensemble_fallback(prepared.bars)
        except ValueError as exc:
            text = (f"{self.name}: no signal: the ensemble did not answer ({degraded or gated_reason}) and the "
                    f"trend rules failed: {exc}")
            return ToolResult(tool=self.name, ok=False, degraded=degraded is not None, degraded_reason=degraded,
                              gated=gated is not None, gated_reason=gated_reason, summary=text, arguments=arguments)
        result.update(degraded=degraded is not None, degraded_reason=degraded, gated=gated is not None,
                      gated_reason=gated_reason)
        if gated is not None:
            result["gate"] = {"model_id": gated.model_id, "summary": gated.summary, "rule": gated.rule}
        probs = ", ".join(f"{k} {v:.2f}" for k, v in result["probabilities"].items())
        status = (f"gated: {gated_reason}. degraded: false" if gated is not None
                  else f"degraded: true ({degraded})")
        summary = (
            f"{prepared.bars.symbol} signal as of {result['as_of']} from TREND RULES, not the ensemble: "
            f"{result['signal'].upper()} (uncalibrated probability {result['confidence']:.2f}; {probs}); "
            f"agreement {result['agreement_score']:.2f}, divergence {result['divergence_metric']:.2f}. "
            f"{status}; do not read the probability as calibrated."
        )
        return ToolResult(tool=self.name, ok=True, degraded=degraded is not None, degraded_reason=degraded,
                          gated=gated is not None, gated_reason=gated_reason, summary=summary, arguments=arguments,
                          data=result)
