"""ClusteringTool: which markets move together, or which market state today resembles (ML server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from quantcrew.data.panel import Panel
from quantcrew.ml_server.schemas.cluster import ClusterRequest, ClusterResponse
from quantcrew.tools.arguments import ToolInputError, parse_names
from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.calls import CallFlow, call
from quantcrew.tools.endpoints import CLUSTER_ANALYZE
from quantcrew.tools.fallbacks import cluster_fallback
from quantcrew.tools.universe import UniverseInput, load_universe

__all__ = ["ClusteringInput", "ClusteringTool"]

_VOL_WINDOW = 20


class ClusteringInput(UniverseInput):
    """What an agent says to group markets or market states."""

    cluster_mode: Literal["auto", "assets", "states"] = Field(
        default="auto",
        description="assets: group the symbols by return correlation (needs 3 or more); states: cluster the days by "
                    "each symbol's return and 20-day volatility and say which state today is in; auto: assets when "
                    "there are 3 or more symbols, else states.",
    )
    cluster_method: Literal["kmeans", "dbscan", "gmm"] = Field(
        default="kmeans", description="kmeans (count by silhouette), dbscan (density) or gmm (count by BIC).",
    )
    n_clusters: int | None = Field(default=None, ge=2, le=16, description="Number of clusters; empty: chosen.")


@dataclass(frozen=True)
class _Prepared:
    panel: Panel
    request: ClusterRequest


class ClusteringTool(QuantTool):
    """Groups of markets that move together, or clusters of market states."""

    name: str = "clustering"
    description: str = (
        "Cluster on the ML server (KMeans, DBSCAN or Gaussian mixture): in 'assets' mode, group symbols whose returns "
        "move together (correlation distance); in 'states' mode, cluster days by return and volatility and report "
        "which state the latest day belongs to. Returns the groups, silhouette and how the count was chosen."
    )
    args_schema: type[BaseModel] = ClusteringInput

    def _prepare(self, arguments: dict[str, Any]) -> _Prepared:
        mode = arguments.get("cluster_mode") or "auto"
        if mode == "auto":
            mode = "assets" if len(parse_names(arguments.get("symbols"), field="symbols")) >= 3 else "states"
        panel = load_universe(self._settings(), arguments, min_assets=3 if mode == "assets" else 1)
        if mode == "assets":
            payload = panel.to_matrix_payload(returns="log")
            n_points = panel.n_assets
        else:
            payload = _state_features(panel)
            n_points = len(payload["values"])
        n_clusters = arguments.get("n_clusters")
        max_clusters = max(2, min(8, n_points - 1))
        request = ClusterRequest.model_validate({
            "data": payload, "mode": "assets" if mode == "assets" else "observations",
            "method": arguments.get("cluster_method") or "kmeans",
            "n_clusters": None if n_clusters is None else min(int(n_clusters), n_points - 1),
            "min_clusters": 2, "max_clusters": max_clusters,
        })
        return _Prepared(panel, request)

    def _calls(self, prepared: _Prepared) -> CallFlow[ClusterResponse]:
        return (yield from call(CLUSTER_ANALYZE, prepared.request))

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared, reply: ClusterResponse) -> ToolResult:
        quality = f"silhouette {reply.silhouette:.2f}" if reply.silhouette is not None else "no silhouette"
        chosen = f", count chosen by {reply.selection_metric}" if reply.selection_metric else ""
        if reply.mode == "assets":
            groups = "; ".join(f"group {k}: {', '.join(v)}" for k, v in (reply.members or {}).items())
            noise = f"; unclustered: {reply.noise_count}" if reply.noise_count else ""
            body = f"{reply.n_clusters} group(s) of symbols by return correlation: {groups}{noise}"
        else:
            sizes = ", ".join(f"state {k}: {v} days" for k, v in sorted(reply.sizes.items()))
            body = (f"{reply.n_clusters} market state(s) over {len(reply.labels)} days ({sizes}); the latest day is in "
                    f"state {reply.current_label}")
        summary = (f"{reply.method} clustering of {', '.join(prepared.panel.symbols)} to {_as_of(reply.as_of)}: {body} "
                   f"({quality}{chosen}). degraded: false")
        data = reply.model_dump(mode="json")
        if reply.mode == "observations":  # the per-day labels are long and the summary says what matters
            data.pop("labels", None)
            data.pop("names", None)
        return ToolResult(tool=self.name, ok=True, summary=summary, arguments=arguments, data=data)

    def _fallback(self, arguments: dict[str, Any], prepared: _Prepared, reason: str) -> ToolResult:
        panel = prepared.panel
        result = cluster_fallback(panel.log_returns(), list(panel.symbols))
        groups = "; ".join(f"group {k}: {', '.join(v)}" for k, v in result["members"].items())
        note = "" if prepared.request.mode == "assets" else " (market-state clustering needs the ML server)"
        summary = (f"Symbols grouped by correlation ({result['rule']}): {groups}{note}. degraded: true ({reason})")
        return ToolResult(tool=self.name, ok=True, degraded=True, degraded_reason=reason, summary=summary,
                          arguments=arguments, data=result)


def _state_features(panel: Panel) -> dict[str, Any]:
    """Per day: each symbol's log return and trailing 20-day volatility (past days only)."""
    rets = panel.log_returns()
    if rets.shape[0] <= _VOL_WINDOW:
        raise ToolInputError(f"lookback must give more than {_VOL_WINDOW} returns for market states")
    windows = np.lib.stride_tricks.sliding_window_view(rets, _VOL_WINDOW, axis=0)  # (n - w + 1, k, w)
    vol = windows.std(axis=2, ddof=1)
    values = np.hstack([rets[_VOL_WINDOW - 1:], vol])
    columns = [f"{s}_return" for s in panel.symbols] + [f"{s}_vol{_VOL_WINDOW}" for s in panel.symbols]
    dates = panel.iso_timestamps()[1:][_VOL_WINDOW - 1:]
    return {"columns": columns, "timestamps": dates, "values": values.tolist()}


def _as_of(value: Any) -> str:
    return value.date().isoformat() if value is not None else "?"
