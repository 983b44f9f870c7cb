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

import math
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from quantcrew.crew.decision import DecisionInputs, ModelOutput, ModelRef, SymbolInputs
from quantcrew.tools.base import ToolResult

__all__ = [
    "AgentSignal",
    "RegimeView",
    "RiskView",
    "StrategyView",
    "SymbolRegime",
    "SymbolStrategy",
    "VarFigure",
    "consulted_outputs",
    "decision_inputs",
    "degraded_inputs",
    "gated_inputs",
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
    gated: bool = Field(default=False, description="A rule answered by design for a model that failed its gate.")
    gated_reasons: list[str] = Field(default_factory=list)


class StrategyView(_View):
    """The strategy agent's output: signals, consensus and execution plan per symbol."""

    symbols: list[SymbolStrategy] = Field(default_factory=list)
    degraded: bool = False
    gated: bool = False


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


def _where(result: ToolResult) -> str:
    symbol = _symbol(result)
    return f"{result.tool}[{symbol}]" if symbol else result.tool


def _reason(result: ToolResult) -> str:
    return f"{_where(result)}: {result.degraded_reason or 'fallback'}"


def _gated_reason(result: ToolResult) -> str:
    return f"{_where(result)}: {result.gated_reason or 'the model failed its quality gate; a rule answered'}"


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
        view.gated_reasons = [_gated_reason(r) for r in used if r.gated]
        view.gated = bool(view.gated_reasons)
        out.append(view)
    return StrategyView(symbols=out, degraded=any(v.degraded for v in out), gated=any(v.gated for v in out))


def model_refs(results: Iterable[ToolResult]) -> list[ModelRef]:
    """Every model (or rule) the results came from, once each, sorted by tool, symbol and model."""
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
    # in a fixed order: the crew's tools may answer in any order, and the same inputs give the same decision
    return [refs[k] for k in sorted(refs, key=lambda key: tuple("" if v is None else str(v) for v in key))]


def degraded_inputs(results: Iterable[ToolResult]) -> list[str]:
    """'tool[symbol]: reason' for every degraded result, once each (the model asked for could not answer)."""
    return sorted(set(_reason(r) for r in results if r.degraded))  # sorted: tools may answer in any order


def gated_inputs(results: Iterable[ToolResult]) -> list[str]:
    """'tool[symbol]: reason' for every gated result, once each (a rule answered by design: the trained model
    failed its quality gate). Not degraded."""
    return sorted(set(_gated_reason(r) for r in results if r.gated))


def _plain(value: Any) -> Any:
    """``value`` as JSON that round-trips exactly: non-finite floats become None, tuples lists."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return str(value) if value is not None and value != "" else None


def _output(result: ToolResult, *, model_id: Any, version: Any, method: Any, output: dict[str, Any],
            degraded: bool | None = None, gated: bool | None = None) -> ModelOutput:
    return ModelOutput(tool=result.tool, model_id=_str(model_id), model_version=_int(version),
                       method_used=_str(method), degraded=result.degraded if degraded is None else degraded,
                       gated=result.gated if gated is None else gated, output=_plain(output))


def _regime_output(r: ToolResult) -> ModelOutput:
    d = r.data
    prov = _dict(d.get("provenance"))
    return _output(r, model_id=d.get("model_id") or prov.get("model_id"),
                   version=d.get("model_version") or prov.get("model_version"),
                   method=d.get("method_used") or prov.get("method_used") or d.get("rule"),
                   output={"label": d.get("current_label"), "probability": d.get("current_probability")})


def _signal_outputs(r: ToolResult) -> list[ModelOutput]:
    out = []
    for s in r.data.get("signals") or []:
        source = str(s.get("source") or "")
        gated = bool(s.get("gated")) or (r.gated and not r.degraded and source != "rl_policy")
        output: dict[str, Any] = {"agent": s.get("agent"), "action": s.get("action_label"),
                                  "target": s.get("target_position"), "source": source, "gated": gated}
        if gated:
            output["gate"] = s.get("gate") or s.get("gated_reason")  # the failed gate, in one sentence
            output["gated_model_id"] = s.get("gated_model_id")
        method = s.get("algorithm") if source == "rl_policy" else s.get("method_used") or "rules"
        model_id = s.get("model_id") or (s.get("gated_model_id") if gated else None)
        out.append(_output(r, model_id=model_id, version=s.get("model_version"), method=method,
                           output=output, gated=gated,
                           degraded=r.degraded and source != "rl_policy" and not gated))
    return out


def _selection_output(r: ToolResult) -> ModelOutput:
    d = r.data
    prov = _dict(d.get("provenance"))
    output = {"agent": d.get("agent"), "decision_id": d.get("decision_id"), "regime": d.get("regime"),
              "mode": d.get("selection"), "reason": d.get("reason"), "evidence": _evidence(d),
              "arms": [{k: a.get(k) for k in ("arm", "estimate", "pulls", "raw_pulls", "mean_reward")}
                       for a in d.get("arms") or [] if isinstance(a, dict)]}
    return _output(r, model_id=prov.get("model_id") or d.get("bandit_id"), version=None,
                   method=prov.get("method_used") or d.get("method_used") or d.get("policy"), output=output)


def _plan_output(r: ToolResult) -> ModelOutput:
    d = r.data
    prov = _dict(d.get("provenance"))
    plan = _dict(d.get("plan"))
    size = plan.get("size") or d.get("size") or {}
    strategic = _dict(d.get("strategic"))
    output = {"size": size.get("mean"), "interval": [size.get("lower"), size.get("upper")] if "lower" in size
              else None, "timing": plan.get("timing") or d.get("timing"),
              "signal": strategic.get("signal") or r.arguments.get("signal")}
    return _output(r, model_id=prov.get("model_id") or d.get("model_id"),
                   version=prov.get("model_version") or d.get("model_version"),
                   method=prov.get("method_used") or d.get("method_used") or d.get("rule"), output=output)


def _ensemble_output(r: ToolResult) -> ModelOutput:
    d = r.data
    served = _dict(d.get("served_by"))
    return _output(r, model_id=served.get("model_id") or d.get("model_id"),
                   version=served.get("version") or d.get("model_version"),
                   method=d.get("method_used") or d.get("rule"),
                   output={"signal": d.get("signal"), "confidence": d.get("confidence")})


def consulted_outputs(*, regime: ToolResult | None = None, signals: ToolResult | None = None,
                      selection: ToolResult | None = None, plan: ToolResult | None = None,
                      ensemble: ToolResult | None = None) -> list[ModelOutput]:
    """What each model consulted for one symbol said: the regime, every agent, the bandit's choice, the
    execution plan and the ensemble, in that order (the ones given)."""
    out: list[ModelOutput] = []
    if regime is not None:
        out.append(_regime_output(regime))
    if signals is not None:
        out += _signal_outputs(signals)
    if selection is not None:
        out.append(_selection_output(selection))
    if plan is not None:
        out.append(_plan_output(plan))
    if ensemble is not None:
        out.append(_ensemble_output(ensemble))
    return out


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
    regime_results = _last_per_symbol(results, "regime_detection")
    ensembles = _last_per_symbol(results, "ensemble_signal")
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
        as_of = (regime.as_of if regime else None) or _date(signals[name].data.get("as_of") if name in signals
                                                            else None)
        per_symbol.append(SymbolInputs(
            symbol=name, as_of=as_of, regime=regime.regime if regime else None,
            regime_probability=regime.probability if regime else None, agent_targets=targets,
            chosen_agent=sel.data.get("agent") if sel else None,
            selection_reason=_selection_reason(sel) if sel else None,
            decision_id=sel.data.get("decision_id") if sel else None,
            size=min(max(float(size["mean"]), 0.0), 1.0) if "mean" in size else None,
            size_interval=interval, timing=timing,
            consulted=consulted_outputs(regime=regime_results.get(name), signals=signals.get(name), selection=sel,
                                        plan=plan, ensemble=ensembles.get(name))))
    as_of = max((r.as_of for r in regimes.values() if r.as_of), default=None)
    return DecisionInputs(as_of=as_of, symbols=per_symbol, portfolio_var=risk.var_95, var_method=risk.var_method,
                          drawdown=drawdown, models=model_refs(results), degraded_inputs=degraded_inputs(results),
                          gated_inputs=gated_inputs(results))


def _date(value: Any) -> str | None:
    text = str(value or "")[:10]
    return text if len(text) == 10 and text[4] == "-" else None


def _evidence(data: dict[str, Any]) -> str | None:
    """The chosen arm's record in plain words: its mean reward over how many rewards, and the estimate."""
    chosen = data.get("agent")
    arms = [a for a in data.get("arms") or [] if isinstance(a, dict)]
    arm = next((a for a in arms if a.get("arm") == chosen), None)
    if arm is None:
        return None
    raw = int(arm.get("raw_pulls") or 0)
    if raw == 0 or arm.get("mean_reward") is None:
        return f"{chosen} has no reward yet in this regime"
    text = f"{chosen} earned a mean reward of {float(arm['mean_reward']):+.4g} over {raw} reward{'s' * (raw != 1)}"
    if arm.get("estimate") is not None:
        sd = f" +/- {float(arm['uncertainty']):.3g}" if arm.get("uncertainty") is not None else ""
        text += f" (estimate {float(arm['estimate']):+.4g}{sd} on {float(arm.get('pulls') or 0):.3g} counted pulls)"
    return text


def _selection_reason(result: ToolResult) -> str:
    d = result.data
    if result.degraded:
        return f"round-robin fallback ({result.degraded_reason})"
    where = f"{d.get('policy') or 'bandit'} bandit, regime {d.get('regime') or '?'}"
    text = f"{where}: {d['reason']}" if d.get("reason") else where
    if d.get("selection") == "exploit":  # the bandit's reason already is the evidence, in plain words
        return text
    evidence = _evidence(d)
    return f"{text}; evidence: {evidence}" if evidence else text
