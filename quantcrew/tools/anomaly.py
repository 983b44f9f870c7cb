"""AnomalyDetectionTool: abnormal recent bars of one or more markets (IsolationForest on the ML server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.symbols import load_symbol
from quantcrew.ml_server.schemas.anomaly import AnomalyRequest, AnomalyResponse
from quantcrew.tools.arguments import parse_names
from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.calls import CallFlow, fan_out
from quantcrew.tools.endpoints import ANOMALY_DETECT
from quantcrew.tools.fallbacks import anomaly_fallback
from quantcrew.tools.universe import UniverseInput

__all__ = ["AnomalyDetectionInput", "AnomalyDetectionTool"]

_MAX_SYMBOLS = 8
_SHOWN = 3


class AnomalyDetectionInput(UniverseInput):
    """What an agent says to look for abnormal bars."""

    contamination: float = Field(default=0.01, gt=0, le=0.5, description="Expected share of abnormal bars.")
    top_k: int = Field(default=5, ge=1, le=50, description="How many of the most abnormal bars to list per symbol.")


@dataclass(frozen=True)
class _Prepared:
    bars: list[OHLCV]
    requests: list[AnomalyRequest]


class AnomalyDetectionTool(QuantTool):
    """Abnormal bars (returns, volume, range, gaps) of one or more symbols."""

    name: str = "anomaly_detection"
    description: str = (
        "Find abnormal daily bars of one or more symbols with an IsolationForest on the ML server, from each bar's "
        "return, range, overnight gap and volume z-score (past bars only). Returns, per symbol, whether the latest "
        "bar is abnormal, how many bars were flagged, and the most abnormal bars with their dates."
    )
    args_schema: type[BaseModel] = AnomalyDetectionInput

    def _prepare(self, arguments: dict[str, Any]) -> _Prepared:
        data = self._settings().data
        names = parse_names(arguments.get("symbols"), field="symbols", max_items=_MAX_SYMBOLS)
        all_bars, requests = [], []
        for name in names:
            bars = load_symbol(name, data_dir=data.data_dir, max_gap_days=data.max_gap_days)
            if arguments.get("end_date"):
                bars = bars.between(None, arguments["end_date"])
            bars = bars.tail(int(arguments.get("lookback") or 1000) + 1)
            all_bars.append(bars)
            requests.append(AnomalyRequest.model_validate({
                "data": to_payload_dict(bars), "contamination": float(arguments.get("contamination") or 0.01),
                "top_k": int(arguments.get("top_k") or 5),
            }))
        return _Prepared(all_bars, requests)

    def _calls(self, prepared: _Prepared) -> CallFlow[list[AnomalyResponse]]:
        return (yield from fan_out(ANOMALY_DETECT, prepared.requests))  # one per symbol, concurrent when async

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared, reply: list[AnomalyResponse]) -> ToolResult:
        parts = []
        for bars, res in zip(prepared.bars, reply, strict=True):
            top = ", ".join(f"{p.timestamp} (score {p.score:.2f})" for p in res.top[:_SHOWN])
            latest = "ABNORMAL" if res.current_flagged else "normal"
            parts.append(
                f"{bars.symbol}: latest bar {latest} (score percentile {res.current_percentile:.0%}); "
                f"{res.n_flagged} of {len(res.scores)} bars flagged; most abnormal: {top}"
            )
        summary = ("Anomalies (IsolationForest on " + ", ".join(reply[0].features_used) + "): "
                   + ". ".join(parts) + ". degraded: false")
        data = {"symbols": {bars.symbol: res.model_dump(mode="json", exclude={"scores", "flags", "timestamps"})
                            for bars, res in zip(prepared.bars, reply, strict=True)}}
        return ToolResult(tool=self.name, ok=True, summary=summary, arguments=arguments, data=data)

    def _fallback(self, arguments: dict[str, Any], prepared: _Prepared, reason: str) -> ToolResult:
        parts, data = [], {}
        for bars in prepared.bars:
            result = anomaly_fallback(bars, top_k=int(arguments.get("top_k") or 5))
            data[bars.symbol] = result
            top = ", ".join(f"{p['timestamp']} (z {p['z']:.1f})" for p in result["top"][:_SHOWN])
            latest = "ABNORMAL" if result.get("current_flagged") else "normal"
            parts.append(f"{bars.symbol}: latest bar {latest}; {result['n_flagged']} bars flagged; largest: {top}")
        rule = next(iter(data.values()))["rule"] if data else "z-scores"
        summary = f"Anomalies by z-score ({rule}): " + ". ".join(parts) + f". degraded: true ({reason})"
        return ToolResult(tool=self.name, ok=True, degraded=True, degraded_reason=reason, summary=summary,
                          arguments=arguments, data={"symbols": data})
