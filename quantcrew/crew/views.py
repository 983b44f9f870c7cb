"""The crew's task outputs (``output_pydantic``) and the code that builds them from tool results.

Each task of the full crew returns one view: the regime analyst a :class:`RegimeView`, the
risk manager a :class:`RiskView`, the strategy agent a :class:`StrategyView`, the
meta-orchestrator a :class:`~quantcrew.crew.decision.Decision`. The builders here read the
structured :class:`~quantcrew.tools.base.ToolResult` the tools kept (never the text an LLM
wrote), so a view is exactly what the models and fallbacks answered. The offline planner
returns these views as its final answers; a real LLM writes its own JSON into the same
schema, and the Decision is always the pipeline's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from quantcrew.crew.decision import DecisionInputs, ModelRef, SymbolInputs
from quantcrew.tools.base import ToolResult

__all__ = [
    "AgentSignal",
    "RegimeView",
    "RiskView",
    "StrategyView",
    "SymbolRegime",
    "SymbolStrategy",
    "VarFigure",
    "decision_inputs",
    "degraded_inputs",
    "model_refs",
    "regime_view",
    "risk_view",
    "strategy_view",
]

# The VaR the decision is held to: the first of these the risk tool produced at 95%, one day.
_VAR_PREFERENCE = ("filtered_historical", "historical", "parametric_t", "monte_carlo", "parametric_normal")


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SymbolRegime(_View):
    """The regime of one symbol."""

    symbol: str
    as_of: str | None = None
    regime: str | None = None
    probability: float | None = Field(default=None, description="Filtered probability of the current regime.")
    expected_durations: dict[str, float] = Field(default_factory=dict, description="Bars per visit, by regime.")
    method_used: str | None = None
    model_id: str | None = None
    model_version: int | None = None
    degraded: bool = False
    degraded_reason: str | None = None


class RegimeView(_View):
    """The regime analyst's output: the current regime of every symbol."""

    regimes: list[SymbolRegime] = Field(default_factory=list)
    degraded: bool = False


class VarFigure(_View):
    """One VaR / CVaR estimate (losses as positive fractions of value)."""

    method: str
    level: float
    horizon_days: int
    var: float
    cvar: float


class RiskView(_View):
    """The risk manager's output: portfolio VaR / CVaR by method and what else it found."""

    symbols: list[str] = Field(default_factory=list)
    weights: list[float] = Field(default_factory=list)
    figures: list[VarFigure] = Field(default_factory=list)
    var_95: float | None = Field(default=None, description="The one-day 95% VaR the decision is held to.")
    var_method: str | None = None
    portfolio_volatility: float | None = Field(default=None, description="Daily volatility of the portfolio.")
    covariance_method: str | None = None
    findings: dict[str, str] = Field(default_factory=dict, description="Each other risk tool's answer, by tool.")
    models: list[ModelRef] = Field(default_factory=list)
    degraded: bool = False
    degraded_reasons: list[str] = Field(default_factory=list)


class AgentSignal(_View):
    """One specialised agent's signal."""

    agent: str
    action: str
    target_position: float
    source: str = Field(description="'rl_policy' or 'rules'.")
    model_id: str | None = None


class SymbolStrategy(_View):
    """What the strategy agent found for one symbol."""

    symbol: str
    as_of: str | None = None
    ensemble_signal: str | None = None
    ensemble_confidence: float | None = None
    ensemble_agreement: float | None = None
    ensemble_divergence: float | None = None
    signals: list[AgentSignal] = Field(default_factory=list)
    consensus_target: float | None = None
    consensus_action: str | None = None
    execution_size: float | None = Field(default=None, description="Size for the ensemble's signal (of the max).")
    execution_timing: str | None = None
    degraded: bool = False
    degraded_reasons: list[str] = Field(default_factory=list)


class StrategyView(_View):
    """The strategy agent's output: signals, consensus and execution plan per symbol."""

    symbols: list[SymbolStrategy] = Field(default_factory=list)
    degraded: bool = False


def _symbol(result: ToolResult) -> str | None:
    value = result.arguments.get("symbol") or result.data.get("symbol")
    return str(value) if value else None


def _by_tool(results: Iterable[ToolResult], tool: str) -> list[ToolResult]:
    return [r for r in results if r.tool == tool and r.ok]


def _last_per_symbol(results: Iterable[ToolResult], tool: str, order: list[str] | None = None
                     ) -> dict[str, ToolResult]:
    """The latest ok result of ``tool`` per symbol; in ``order`` first (tools may answer in parallel), then
    alphabetically."""
    out: dict[str, ToolResult] = {}
    for r in _by_tool(results, tool):
        symbol = _symbol(r)
        if symbol is not None:
            out[symbol.upper()] = r
    rank = {s.upper(): i for i, s in enumerate(order or [])}
    return dict(sorted(out.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


def _reason(result: ToolResult) -> str:
    symbol = _symbol(result)
    where = f"{result.tool}[{symbol}]" if symbol else result.tool
    return f"{where}: {result.degraded_reason or 'fallback'}"


def regime_view(results: Iterable[ToolResult], symbols: list[str] | None = None) -> RegimeView:
    """The regime of every symbol ``regime_detection`` answered for (the latest answer per symbol),
    in the order of ``symbols``."""
    regimes = []
    for symbol, r in _last_per_symbol(results, "regime_detection", symbols).items():
        d = r.data
        durations = {str(s["label"]): float(s["expected_duration"]) for s in d.get("state_info") or []}
        regimes.append(SymbolRegime(
            symbol=symbol, as_of=str(d.get("as_of") or "")[:10] or None, regime=d.get("current_label"),
            probability=d.get("current_probability"), expected_durations=durations,
            method_used=d.get("method_used") or d.get("rule"), model_id=d.get("model_id"),
            model_version=d.get("model_version"), degraded=r.degraded, degraded_reason=r.degraded_reason))
    return RegimeView(regimes=regimes, degraded=any(x.degraded for x in regimes))


def risk_view(results: Iterable[ToolResult]) -> RiskView:
    """Portfolio VaR from ``risk_metrics`` and the other risk tools' answers."""
    results = list(results)
    view = RiskView()
    risk = _by_tool(results, "risk_metrics")
    if risk:
        d = risk[-1].data
        view.symbols = [str(c) for c in d.get("columns") or []] or str(
            risk[-1].arguments.get("symbols", "")).split(",")
        view.weights = [float(w) for w in d.get("weights") or []]
        view.figures = [VarFigure(method=str(e["method"]), level=float(e["level"]),
                                  horizon_days=int(e.get("horizon_days") or 1), var=float(e["var"]),
                                  cvar=float(e["cvar"])) for e in d.get("estimates") or []]
        view.portfolio_volatility = d.get("portfolio_volatility")
        view.covariance_method = d.get("covariance_method")
        one_day = {f.method: f for f in view.figures if abs(f.level - 0.95) < 1e-9}
        for method in _VAR_PREFERENCE:
            if method in one_day:
                f = one_day[method]
                view.var_95 = f.var / max(f.horizon_days, 1) ** 0.5  # back to one day (square root of time)
                view.var_method = method
                break
    for tool in ("factor_analysis", "clustering", "anomaly_detection"):
        found = _by_tool(results, tool)
        if found:
            view.findings[tool] = found[-1].summary
    used = [r for r in results if r.tool in ("risk_metrics", "factor_analysis", "clustering", "anomaly_detection")]
    view.models = model_refs(used)
    view.degraded_reasons = [_reason(r) for r in used if r.degraded]
    view.degraded = bool(view.degraded_reasons)
    return view


def strategy_view(results: Iterable[ToolResult], symbols: list[str] | None = None) -> StrategyView:
    """Per symbol (in the order of ``symbols``): the ensemble's signal, each agent's signal, the consensus
    and the execution plan."""
    results = list(results)
    ensembles = _last_per_symbol(results, "ensemble_signal", symbols)
    signals = _last_per_symbol(results, "strategy_signals", symbols)
    plans = _last_per_symbol([r for r in results if str(r.arguments.get("signal") or "auto") == "auto"],
                             "execution_plan", symbols)
    out = []
    rank = {s.upper(): i for i, s in enumerate(symbols or [])}
    for symbol in sorted(dict.fromkeys([*signals, *ensembles, *plans]), key=lambda x: (rank.get(x, len(rank)), x)):
        view = SymbolStrategy(symbol=symbol)
        used = [r for r in (ensembles.get(symbol), signals.get(symbol), plans.get(symbol)) if r is not None]
        if (e := ensembles.get(symbol)) is not None:
            view.ensemble_signal = e.data.get("signal")
            view.ensemble_confidence = e.data.get("confidence")
            view.ensemble_agreement = e.data.get("agreement_score")
            view.ensemble_divergence = e.data.get("divergence_metric")
            view.as_of = str(e.data.get("as_of") or "")[:10] or None
        if (s := signals.get(symbol)) is not None:
            view.signals = [AgentSignal(agent=str(x["agent"]), action=str(x["action_label"]),
                                        target_position=float(x["target_position"]), source=str(x.get("source")),
                                        model_id=x.get("model_id")) for x in s.data.get("signals") or []]
            c = s.data.get("consensus") or {}
            view.consensus_target, view.consensus_action = c.get("mean_target_position"), c.get("majority")
            view.as_of = view.as_of or s.data.get("as_of")
        if (p := plans.get(symbol)) is not None:
            size = (p.data.get("plan") or {}).get("size") or p.data.get("size") or {}
            view.execution_size = size.get("mean")
            view.execution_timing = (p.data.get("plan") or {}).get("timing") or p.data.get("timing")
        view.degraded_reasons = [_reason(r) for r in used if r.degraded]
        view.degraded = bool(view.degraded_reasons)
        out.append(view)
    return StrategyView(symbols=out, degraded=any(v.degraded for v in out))


def model_refs(results: Iterable[ToolResult]) -> list[ModelRef]:
    """Every model (or rule) the results came from, once each."""
    refs: dict[tuple[Any, ...], ModelRef] = {}

    def add(tool: str, symbol: str | None, model_id: Any, version: Any, method: Any) -> None:
        ref = ModelRef(tool=tool, symbol=symbol, model_id=model_id, model_version=version,
                       method_used=str(method) if method is not None else None)
        refs.setdefault((tool, symbol, model_id, version, ref.method_used), ref)

    for r in results:
        d, symbol = r.data, _symbol(r)
        raw = d.get("provenance")
        prov: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if r.tool == "strategy_signals":
            for s in d.get("signals") or []:
                add(r.tool, symbol, s.get("model_id"), s.get("model_version"),
                    s.get("algorithm") or s.get("rule") or s.get("source"))
            continue
        if r.tool == "ensemble_signal" and isinstance(d.get("served_by"), dict):
            sb = d["served_by"]
            add(r.tool, symbol, sb.get("model_id"), sb.get("version"), d.get("method_used"))
            continue
        model_id = d.get("model_id") or prov.get("model_id")
        version = d.get("model_version") or prov.get("model_version")
        method = d.get("method_used") or prov.get("method_used") or d.get("rule")
        add(r.tool, symbol, model_id, version, method)
    return list(refs.values())


def degraded_inputs(results: Iterable[ToolResult]) -> list[str]:
    """'tool[symbol]: reason' for every degraded result, once each."""
    return list(dict.fromkeys(_reason(r) for r in results if r.degraded))


def decision_inputs(results: list[ToolResult], symbols: list[str], *, drawdown: float = 0.0) -> DecisionInputs:
    """Everything the decision needs, from the run's tool results.

    Per symbol: the regime (``regime_detection``), every agent's target (``strategy_signals``),
    the chosen agent (the latest ``agent_selection`` in select mode) and the size of the
    execution plan made for the chosen agent's signal (an ``execution_plan`` whose ``signal``
    argument is not ``auto``; else the ensemble's plan). Portfolio VaR from ``risk_metrics``.
    Earlier decisions in ``results`` are not inputs.
    """
    results = [r for r in results if r.tool != "portfolio_decision"]
    regimes = {r.symbol: r for r in regime_view(results).regimes}
    risk = risk_view(results)
    signals = _last_per_symbol(results, "strategy_signals")
    selections = {s: r for s, r in _last_per_symbol(
        [r for r in results if r.data.get("mode", "select") == "select"], "agent_selection").items()}
    plans: dict[str, ToolResult] = {}
    for r in _by_tool(results, "execution_plan"):  # a plan for the chosen signal beats the ensemble's
        symbol = _symbol(r)
        if symbol is not None and (str(r.arguments.get("signal") or "auto") != "auto" or symbol.upper() not in plans):
            plans[symbol.upper()] = r
    per_symbol = []
    for name in (s.upper() for s in symbols):
        regime = regimes.get(name)
        targets = {str(x["agent"]): float(x["target_position"])
                   for x in (signals[name].data.get("signals") or [])} if name in signals else {}
        sel = selections.get(name)
        plan = plans.get(name)
        size: dict[str, Any] = {}
        timing = None
        if plan is not None:
            size = (plan.data.get("plan") or {}).get("size") or plan.data.get("size") or {}
            timing = (plan.data.get("plan") or {}).get("timing") or plan.data.get("timing")
        interval = (float(size["lower"]), float(size["upper"])) if "lower" in size and "upper" in size else None
        per_symbol.append(SymbolInputs(
            symbol=name, regime=regime.regime if regime else None,
            regime_probability=regime.probability if regime else None, agent_targets=targets,
            chosen_agent=sel.data.get("agent") if sel else None,
            selection_reason=_selection_reason(sel) if sel else None,
            decision_id=sel.data.get("decision_id") if sel else None,
            size=min(max(float(size["mean"]), 0.0), 1.0) if "mean" in size else None,
            size_interval=interval, timing=timing))
    as_of = max((r.as_of for r in regimes.values() if r.as_of), default=None)
    return DecisionInputs(as_of=as_of, symbols=per_symbol, portfolio_var=risk.var_95, var_method=risk.var_method,
                          drawdown=drawdown, models=model_refs(results), degraded_inputs=degraded_inputs(results))


def _selection_reason(result: ToolResult) -> str:
    d = result.data
    if result.degraded:
        return f"round-robin fallback ({result.degraded_reason})"
    where = f"{d.get('policy') or 'bandit'} bandit, regime {d.get('regime') or '?'}"
    return f"{where}: {d['reason']}" if d.get("reason") else where
