"""Views and decision inputs built from fixed tool results."""

from __future__ import annotations

import pytest

from quantcrew.crew.decision import decide
from quantcrew.crew.views import decision_inputs, model_refs, regime_view, risk_view, strategy_view
from quantcrew.tools.base import ToolResult


def _regime(symbol: str, label: str, degraded: bool = False) -> ToolResult:
    data = {"current_label": label, "current_probability": 0.8, "as_of": "2018-12-31T00:00:00",
            "method_used": "gaussian_hmm", "model_id": f"regime-{symbol}", "model_version": 2,
            "state_info": [{"label": label, "expected_duration": 12.5}]}
    return ToolResult(tool="regime_detection", ok=True, degraded=degraded, degraded_reason="down" if degraded else None,
                      summary="", arguments={"symbol": symbol}, data=data)


def _signals(symbol: str, aggressive: float) -> ToolResult:
    signals = [{"agent": "aggressive", "action_label": "long" if aggressive > 0 else "short",
                "target_position": aggressive, "source": "rl_policy", "model_id": f"ppo-{symbol}"},
               {"agent": "contrarian", "action_label": "flat", "target_position": 0.0, "source": "rules",
                "rule": "z-score"}]
    return ToolResult(tool="strategy_signals", ok=True, summary="", arguments={"symbol": symbol},
                      data={"signals": signals, "consensus": {"mean_target_position": aggressive / 2,
                                                              "majority": "split"}, "as_of": "2018-12-31"})


def _selection(symbol: str, agent: str) -> ToolResult:
    return ToolResult(tool="agent_selection", ok=True, summary="", arguments={"symbol": symbol, "regime": "bull"},
                      data={"mode": "select", "agent": agent, "decision_id": f"dec-{symbol}", "regime": "bull",
                            "policy": "thompson_beta", "reason": "highest sample"})


def _plan(symbol: str, signal: str, size: float) -> ToolResult:
    return ToolResult(tool="execution_plan", ok=True, summary="", arguments={"symbol": symbol, "signal": signal},
                      data={"plan": {"size": {"mean": size, "lower": size - 0.1, "upper": size + 0.1},
                                     "timing": "now"}, "provenance": {"model_id": "exec-1", "model_version": 1,
                                                                      "method_used": "mc_dropout"}})


def _risk(var_95: float) -> ToolResult:
    estimates = [{"method": "historical", "level": 0.95, "horizon_days": 1, "var": var_95 + 0.01, "cvar": 0.05},
                 {"method": "filtered_historical", "level": 0.95, "horizon_days": 1, "var": var_95, "cvar": 0.04},
                 {"method": "filtered_historical", "level": 0.99, "horizon_days": 1, "var": 0.05, "cvar": 0.06}]
    return ToolResult(tool="risk_metrics", ok=True, summary="", arguments={"symbols": "SP500,NASDAQ"},
                      data={"columns": ["SP500", "NASDAQ"], "weights": [0.5, 0.5], "estimates": estimates,
                            "portfolio_volatility": 0.012, "covariance_method": "ledoit_wolf",
                            "model_id": None, "method_used": "var"})


RESULTS = [_regime("NASDAQ", "bear", degraded=True), _regime("SP500", "bull"), _risk(0.02),
           _signals("SP500", 1.0), _signals("NASDAQ", -1.0), _plan("SP500", "auto", 0.9),
           _selection("SP500", "aggressive"), _plan("SP500", "up", 0.4), _selection("NASDAQ", "contrarian")]


def test_regime_view_follows_the_symbols_order_and_keeps_provenance() -> None:
    view = regime_view(RESULTS, ["SP500", "NASDAQ"])
    assert [(r.symbol, r.regime, r.model_id, r.degraded) for r in view.regimes] == [
        ("SP500", "bull", "regime-SP500", False), ("NASDAQ", "bear", "regime-NASDAQ", True)]
    assert view.regimes[0].expected_durations == {"bull": 12.5} and view.degraded


def test_risk_view_prefers_filtered_historical_var_at_95() -> None:
    view = risk_view(RESULTS)
    assert view.var_95 == pytest.approx(0.02) and view.var_method == "filtered_historical"
    assert view.symbols == ["SP500", "NASDAQ"] and len(view.figures) == 3 and not view.degraded


def test_strategy_view_uses_the_ensemble_plan_not_the_chosen_one() -> None:
    [sp, nq] = strategy_view(RESULTS, ["SP500", "NASDAQ"]).symbols
    assert sp.execution_size == pytest.approx(0.9) and sp.consensus_target == pytest.approx(0.5)
    assert [a.agent for a in sp.signals] == ["aggressive", "contrarian"] and nq.execution_size is None


def test_decision_inputs_take_the_plan_for_the_chosen_signal() -> None:
    inputs = decision_inputs(RESULTS, ["SP500", "NASDAQ"], drawdown=0.05)
    sp, nq = inputs.symbols
    assert (sp.chosen_agent, sp.size, sp.decision_id, sp.regime) == ("aggressive", pytest.approx(0.4), "dec-SP500",
                                                                     "bull")
    assert sp.size_interval == (pytest.approx(0.3), pytest.approx(0.5))
    assert (nq.chosen_agent, nq.size) == ("contrarian", None)
    assert inputs.portfolio_var == pytest.approx(0.02) and inputs.drawdown == 0.05
    assert inputs.degraded_inputs == ["regime_detection[NASDAQ]: down"]
    decision = decide(inputs)
    assert decision.target("SP500") == pytest.approx(0.4) and decision.target("NASDAQ") == 0.0


def test_model_refs_lists_each_model_once() -> None:
    refs = model_refs(RESULTS + [_regime("SP500", "bull")])
    ids = [r.model_id for r in refs if r.model_id]
    assert ids.count("regime-SP500") == 1 and "ppo-SP500" in ids and "exec-1" in ids
