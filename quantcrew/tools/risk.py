"""RiskMetricsTool: how much a portfolio can lose (VaR and CVaR), from the ML server's risk family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from quantcrew.data.panel import Panel
from quantcrew.ml_server.schemas.risk import VAR_METHODS, VarRequest, VarResponse
from quantcrew.tools.arguments import ToolInputError, check_weights, parse_floats, parse_names
from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.calls import CallFlow, call
from quantcrew.tools.endpoints import RISK_VAR
from quantcrew.tools.fallbacks import risk_fallback
from quantcrew.tools.universe import UniverseInput, load_universe

__all__ = ["RiskMetricsInput", "RiskMetricsTool"]


class RiskMetricsInput(UniverseInput):
    """What an agent says to ask for a portfolio's VaR and CVaR."""

    weights: str | list[float] | None = Field(
        default=None, description="Comma-separated weights, one per symbol, summing to 1 (e.g. '0.6,0.4'); "
                                  "empty means equal weights. Negative weights are short positions.",
    )
    normalize_weights: bool = Field(default=False, description="Rescale weights that do not sum to 1.")
    horizon_days: int = Field(default=1, ge=1, le=250, description="VaR horizon in trading days.")
    confidence_levels: str | list[float] | None = Field(
        default="0.95,0.99", description="Comma-separated confidence levels strictly between 0 and 1.",
    )
    var_methods: str | list[str] | None = Field(
        default=None, description=f"Comma-separated methods among {', '.join(VAR_METHODS)}; empty means all.",
    )
    portfolio_value: float = Field(default=1.0, gt=0, description="Portfolio value, to quote losses as amounts.")


@dataclass(frozen=True)
class _Prepared:
    panel: Panel
    request: VarRequest


class RiskMetricsTool(QuantTool):
    """Value-at-Risk and expected shortfall of a portfolio of symbols and weights."""

    name: str = "risk_metrics"
    description: str = (
        "Compute the Value-at-Risk and CVaR (expected shortfall) of a portfolio of symbols and weights on the ML "
        "server, at 95% and 99% by default, by historical simulation, parametric normal and Student-t, Monte Carlo "
        "from a shrunk (Ledoit-Wolf) covariance, and GARCH filtered historical simulation. Returns each estimate "
        "as a loss fraction, the portfolio volatility, and the covariance's shrinkage and condition number."
    )
    args_schema: type[BaseModel] = RiskMetricsInput

    def _prepare(self, arguments: dict[str, Any]) -> _Prepared:
        panel = load_universe(self._settings(), arguments)
        weights = check_weights(parse_floats(arguments.get("weights"), field="weights"), panel.n_assets,
                                normalize=bool(arguments.get("normalize_weights")))
        levels = parse_floats(arguments.get("confidence_levels"), field="confidence_levels") or [0.95, 0.99]
        for level in levels:
            if not 0.0 < level < 1.0:
                raise ToolInputError(f"confidence_levels: {level} is not strictly between 0 and 1 (e.g. 0.99)")
        methods: list[str] = list(VAR_METHODS)
        if arguments.get("var_methods"):
            methods = parse_names(arguments["var_methods"], field="var_methods")
            unknown = sorted(set(methods) - set(VAR_METHODS))
            if unknown:
                raise ToolInputError(f"var_methods: unknown {unknown}; choose among {', '.join(VAR_METHODS)}")
        if "filtered_historical" in methods and len(panel) - 1 < 250:
            methods.remove("filtered_historical")  # a GARCH fit needs 250 returns; say so rather than fail
        request = VarRequest.model_validate({
            "data": panel.to_matrix_payload(returns="simple"), "weights": weights, "levels": sorted(set(levels)),
            "horizon_days": int(arguments.get("horizon_days") or 1), "methods": methods,
            "portfolio_value": float(arguments.get("portfolio_value") or 1.0),
        })
        return _Prepared(panel, request)

    def _calls(self, prepared: _Prepared) -> CallFlow[VarResponse]:
        return (yield from call(RISK_VAR, prepared.request))

    def _answer(self, arguments: dict[str, Any], prepared: _Prepared, reply: VarResponse) -> ToolResult:
        by_level: dict[float, list[str]] = {}
        for est in reply.estimates:
            by_level.setdefault(est.level, []).append(f"{est.method} {est.var:.2%} (CVaR {est.cvar:.2%})")
        levels = "; ".join(f"{level:.0%}: " + ", ".join(items) for level, items in sorted(by_level.items()))
        shrink = f"shrinkage {reply.shrinkage:.3f}, " if reply.shrinkage is not None else ""
        cond = f"condition number {reply.condition_number:.1f}" if reply.condition_number is not None else ""
        fallback = f" Server fallback: {reply.fallback_reason}." if reply.fallback else ""
        summary = (
            f"Portfolio {_weights_text(reply.columns, reply.weights)} over {reply.n_observations} daily returns "
            f"to {_as_of(reply.as_of)}, {reply.estimates[0].horizon_days if reply.estimates else 1}-day loss as a "
            f"fraction of value. {levels}. Daily volatility {reply.portfolio_volatility:.2%}; covariance "
            f"{reply.covariance_method} ({shrink}{cond}).{fallback} degraded: false"
        )
        data = reply.model_dump(mode="json")
        return ToolResult(tool=self.name, ok=True, summary=summary, arguments=arguments, data=data)

    def _fallback(self, arguments: dict[str, Any], prepared: _Prepared, reason: str) -> ToolResult:
        req = prepared.request
        weights = req.weights or [1.0 / prepared.panel.n_assets] * prepared.panel.n_assets
        result = risk_fallback(prepared.panel.simple_returns(), weights, req.levels, req.horizon_days)
        levels = "; ".join(f"{e['level']:.0%}: historical {e['var']:.2%} (CVaR {e['cvar']:.2%})"
                           for e in result["estimates"])
        summary = (
            f"Portfolio {_weights_text(list(prepared.panel.symbols), weights)} over {result['n_observations']} daily "
            f"returns, {req.horizon_days}-day loss ({result['rule']}). {levels}. Daily volatility "
            f"{result['portfolio_volatility']:.2%}. degraded: true ({reason}); only historical VaR is available "
            "until the ML server is back."
        )
        return ToolResult(tool=self.name, ok=True, degraded=True, degraded_reason=reason, summary=summary,
                          arguments=arguments, data=result)


def _weights_text(columns: list[str], weights: list[float]) -> str:
    return " / ".join(f"{c} {w:.0%}" for c, w in zip(columns, weights, strict=True))


def _as_of(value: Any) -> str:
    return value.date().isoformat() if value is not None else "?"
