"""FactorAnalysisTool: where a portfolio's variance comes from (PCA, FastICA or NMF on the ML server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from quantcrew.data.panel import Panel
from quantcrew.ml_server.schemas.decompose import DecomposeRequest, DecomposeResponse
from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.calls import CallFlow, call
from quantcrew.tools.endpoints import DECOMPOSE_ANALYZE
from quantcrew.tools.fallbacks import factor_fallback
from quantcrew.tools.universe import UniverseInput, load_universe

__all__ = ["FactorAnalysisInput", "FactorAnalysisTool"]


class FactorAnalysisInput(UniverseInput):
    """What an agent says to ask for the common factors of several markets."""

    factor_method: Literal["pca", "ica", "nmf"] = Field(
        default="pca", description="pca (variance-ranked factors), ica (independent sources) or nmf (non-negative).",
    )
    n_components: int | None = Field(
        default=None, ge=1, le=32, description="Factors to extract; empty: PCA keeps those explaining 90% of variance.",
    )


@dataclass(frozen=True)
class _Prepared:
    panel: Panel
    request: DecomposeRequest


class FactorAnalysisTool(QuantTool):
    """Common factors of several markets' returns and each market's exposure to them."""

    name: str = "factor_analysis"
    description: str = (
        "Decompose the daily returns of several symbols into common factors on the ML server (PCA by default, or "
        "FastICA / NMF): how much of the variance each factor explains and each symbol's exposure (loading). "
        "Use it to see where a portfolio's risk comes from and how concentrated it is."
    )
    args_schema: type[BaseModel] = FactorAnalysisInput

    def _prepare(self, arguments: dict[str, Any]) -> _Prepared:
        panel = load_universe(self._settings(), arguments, min_assets=2)
        n_components = arguments.get("n_components")
        if n_components is not None:
            n_components = min(int(n_components), panel.n_assets)
        method = arguments.get("factor_method") or "pca"
        request = DecomposeRequest.model_validate({
            "data": panel.to_matrix_payload(returns="log"), "method": method, "n_components": n_components,
            # NMF needs non-negative input: returns are not, so the tool asks for the documented shift
            "nmf_shift": method == "nmf",
        })
        return _Prepared(panel, request)

    def _calls(self, prepared: _Prepared) -> CallFlow[DecomposeResponse]:
        return (yield from call(DECOMPOSE_ANALYZE, prepared.request))

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared, reply: DecomposeResponse) -> ToolResult:
        shares = ", ".join(f"{name} {ratio:.1%}" for name, ratio in
                           zip(reply.component_names, reply.explained_variance_ratio, strict=True))
        first = reply.component_names[0]
        exposures = ", ".join(f"{asset} {values[0]:+.2f}" for asset, values in reply.exposures.items())
        shift = f" Input shifted by {reply.shift_applied:.4g} for NMF." if reply.shift_applied else ""
        summary = (
            f"{reply.method.upper()} of {len(prepared.panel) - 1} daily returns of {', '.join(reply.columns)} to "
            f"{_as_of(reply.as_of)}: {reply.n_components} factor(s) explain {shares} of the variance "
            f"(cumulative {reply.cumulative_ratio[-1]:.1%}). Exposures to {first}: {exposures}.{shift} degraded: false"
        )
        data = reply.model_dump(mode="json", exclude={"scores"})
        return ToolResult(tool=self.name, ok=True, summary=summary, arguments=arguments, data=data)

    def _fallback(self, arguments: dict[str, Any], prepared: _Prepared, reason: str) -> ToolResult:
        panel = prepared.panel
        result = factor_fallback(panel.log_returns(), list(panel.symbols), prepared.request.n_components)
        shares = ", ".join(f"pc{i + 1} {r:.1%}" for i, r in enumerate(result["explained_variance_ratio"]))
        exposures = ", ".join(f"{a} {v[0]:+.2f}" for a, v in result["exposures"].items())
        summary = (
            f"PCA ({result['rule']}) of {len(panel) - 1} daily returns of {', '.join(panel.symbols)}: {shares} of the "
            f"variance. Exposures to pc1: {exposures}. degraded: true ({reason})"
            + ("; ICA/NMF need the ML server, this is PCA" if prepared.request.method != "pca" else "")
        )
        return ToolResult(tool=self.name, ok=True, degraded=True, degraded_reason=reason, summary=summary,
                          arguments=arguments, data=result)


def _as_of(value: Any) -> str:
    return value.date().isoformat() if value is not None else "?"
