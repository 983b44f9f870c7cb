"""EnsembleSignalTool: the deployed ensemble's signal on a symbol, with a confidence that means something.

The server's LSTM and Transformer members (temperature-scaled, mixed by validation weights)
give a down / flat / up signal, its calibrated probability, and how much the members agree
(agreement, consensus, divergence, entropy). With no trained ensemble, or with the server
down, three trend rules stand in (:func:`quantcrew.tools.fallbacks.ensemble_fallback`) and
the answer says so.
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
from quantcrew.tools.errors import NotFound
from quantcrew.tools.fallbacks import ensemble_fallback

__all__ = ["ENSEMBLE_MIN_BARS", "EnsembleSignalInput", "EnsembleSignalTool", "load_recent"]

ENSEMBLE_MIN_BARS = 130  # 70 warm-up bars for the features + a window of up to 60
_TRAIN_HINT = "run `quantcrew train --model ensemble`"


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
        "answered. Without a trained ensemble or a server, three trend rules answer instead, marked degraded."
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

    def _calls(self, prepared: _Prepared) -> CallFlow[EnsemblePredictResponse | str]:
        try:
            return (yield from call(ENSEMBLE_PREDICT, prepared.request))
        except NotFound as exc:
            return f"no ensemble deployed for {prepared.bars.symbol} ({exc.message}): {_TRAIN_HINT}"

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared,
                reply: EnsemblePredictResponse | str) -> ToolResult:
        if isinstance(reply, str):
            return self._fallback(arguments, prepared, reply)
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
        try:
            result = ensemble_fallback(prepared.bars)
        except ValueError as exc:
            text = f"{self.name}: no signal: the server could not answer ({reason}) and the fallback failed: {exc}"
            return ToolResult(tool=self.name, ok=False, degraded=True, degraded_reason=reason, summary=text,
                              arguments=arguments)
        result.update(degraded=True, degraded_reason=reason)
        probs = ", ".join(f"{k} {v:.2f}" for k, v in result["probabilities"].items())
        summary = (
            f"{prepared.bars.symbol} signal as of {result['as_of']} from TREND RULES, not the ensemble: "
            f"{result['signal'].upper()} (uncalibrated probability {result['confidence']:.2f}; {probs}); "
            f"agreement {result['agreement_score']:.2f}, divergence {result['divergence_metric']:.2f}. "
            f"degraded: true ({reason}); do not read the probability as calibrated."
        )
        return ToolResult(tool=self.name, ok=True, degraded=True, degraded_reason=reason, summary=summary,
                          arguments=arguments, data=result)
