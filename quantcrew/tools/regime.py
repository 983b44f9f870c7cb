"""RegimeDetectionTool: which market regime a symbol is in, from the ML server's HMM."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, field_validator

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.symbols import load_symbol
from quantcrew.ml_server.schemas.regime import RegimeLabelRequest, RegimeLabelResponse
from quantcrew.tools.arguments import iso_date
from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.calls import CallFlow, call
from quantcrew.tools.endpoints import REGIME_LABEL
from quantcrew.tools.fallbacks import regime_fallback

__all__ = ["RegimeDetectionInput", "RegimeDetectionTool"]

_RECENT = 20


class RegimeDetectionInput(BaseModel):
    """What an agent says to ask for a regime."""

    symbol: str = Field(
        default="SP500",
        description="Market to analyse: a bundled series (SP500, NASDAQ, VIX, CRUDE), a symbol with a CSV/Parquet "
                    "file in the data folder, or a file path.",
    )
    lookback: int = Field(default=750, ge=60, le=20_000, description="Number of most recent daily bars to use.")
    n_states: int | None = Field(
        default=None, ge=2, le=6, description="Hidden states of the HMM; leave empty to choose by BIC.",
    )
    end_date: str | None = Field(
        default=None, description="Analyse as of this date (YYYY-MM-DD); empty means the latest bar.",
    )

    @field_validator("end_date")
    @classmethod
    def _end_date(cls, v: str | None) -> str | None:
        return iso_date(v)


@dataclass(frozen=True)
class _Prepared:
    bars: OHLCV
    request: RegimeLabelRequest


class RegimeDetectionTool(QuantTool):
    """Detects the market regime (bull, bear, sideways, volatile) of a symbol."""

    name: str = "regime_detection"
    description: str = (
        "Detect the current market regime of a symbol (bull, bear, sideways or volatile) with a Gaussian hidden "
        "Markov model on the ML server, using only past bars (filtered probabilities). Use it before sizing risk or "
        "choosing a strategy. Returns the current regime with its probability, how the last bars were labelled, "
        "each regime's expected duration, and the model's provenance."
    )
    args_schema: type[BaseModel] = RegimeDetectionInput

    def _prepare(self, arguments: dict[str, Any]) -> _Prepared:
        data = self._settings().data
        bars = load_symbol(arguments["symbol"], data_dir=data.data_dir, max_gap_days=data.max_gap_days)
        if arguments.get("end_date"):
            bars = bars.between(None, arguments["end_date"])
        bars = bars.tail(int(arguments["lookback"]) + 1)  # +1: the first bar only seeds the first return
        request = RegimeLabelRequest.model_validate(
            # the per-bar probabilities are most of the reply and the tool keeps none of them
            {"data": to_payload_dict(bars), "n_states": arguments.get("n_states"), "include_probabilities": False}
        )
        return _Prepared(bars, request)

    def _calls(self, prepared: _Prepared) -> CallFlow[RegimeLabelResponse]:
        return (yield from call(REGIME_LABEL, prepared.request))

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared, reply: RegimeLabelResponse) -> ToolResult:
        recent = Counter(reply.labels[-_RECENT:])
        recent_txt = ", ".join(f"{label} {count}" for label, count in recent.most_common())
        states = sorted(reply.state_info, key=lambda s: -s.occupancy)
        durations = ", ".join(f"{s.label} {s.expected_duration:.1f}" for s in states)
        method = reply.method_used + (f" (FALLBACK: {reply.fallback_reason})" if reply.fallback else "")
        as_of = reply.as_of.date().isoformat() if reply.as_of else "?"
        summary = (
            f"{prepared.bars.symbol} regime as of {as_of}: {reply.current_label.upper()} "
            f"(filtered probability {reply.current_probability:.2f}{_trend_note(reply)}). "
            f"Last {min(_RECENT, len(reply.labels))} bars: {recent_txt}. "
            f"Model: {reply.n_states}-state {method} on {len(reply.labels)} bars; "
            f"expected duration per state (bars): {durations}. degraded: false"
        )
        data = reply.model_dump(mode="json", exclude={"state_probabilities", "label_probabilities"})
        return ToolResult(tool=self.name, ok=True, summary=summary, arguments=arguments, data=data)

    def _fallback(self, arguments: dict[str, Any], prepared: _Prepared, reason: str) -> ToolResult:
        result = regime_fallback(prepared.bars)
        summary = (
            f"{prepared.bars.symbol} regime as of {result['as_of']}: {str(result['current_label']).upper()} "
            f"(rule-based estimate: {result['rule']}). degraded: true ({reason}); "
            "treat this as a rough estimate until the ML server is back."
        )
        return ToolResult(tool=self.name, ok=True, degraded=True, degraded_reason=reason, summary=summary,
                          arguments=arguments, data=result)


def _trend_note(reply: RegimeLabelResponse) -> str:
    """Why a calm state reads bear: the trend reading of the last bar, when it applied."""
    trend = reply.trend
    if trend is None or not (trend.applied and trend.bear_trend):
        return ""
    quarter = (f", {trend.calm_trailing_return:+.0%} over the last quarter"
               if trend.calm_trailing_return is not None else "")
    return (f"; read with the trend: on the days the model calls calm the market is {trend.calm_drawdown:.0%} "
            f"below their {trend.high_days}-day high{quarter}, so calm states count as bear")
