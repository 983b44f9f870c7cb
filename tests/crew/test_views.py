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


def _gated_signals(symbol: str) -> ToolResult:
    signals = [{"agent": "aggressive", "action_label": "long", "target_position": 0.8, "source": "rl_policy",
                "model_id": f"ppo-{symbol}", "model_version": 3, "algorithm": "ppo"},
               {"agent": "balanced", "action_label": "short", "target_position": -0.5, "source": "rules",
                "rule": "momentum", "gated": True, "gated_model_id": "rl-balanced-1",
                "gate": "failed: Sharpe after costs 0.12 <= buy-and-hold 0.41"}]
    return ToolResult(tool="strategy_signals", ok=True, gated=True,
                      gated_reason="balanced: RL policy rl-balanced-1 failed its gate; momentum rule answered",
                      summary="", arguments={"symbol": symbol}, data={"signals": signals, "as_of": "2018-12-31"})


def _bandit_choice(symbol: str) -> ToolResult:
    arms = [{"arm": "aggressive", "arm_index": 1, "estimate": 0.0021, "uncertainty": 0.0004, "pulls": 30.0,
             "raw_pulls": 34, "score": None, "mean_reward": 0.0019},
            {"arm": "balanced", "arm_index": 2, "estimate": 0.0005, "uncertainty": 0.0006, "pulls": 12.0,
             "raw_pulls": 12, "score": None, "mean_reward": 0.0004}]
    return ToolResult(tool="agent_selection", ok=True, summary="", arguments={"symbol": symbol, "regime": "bull"},
                      data={"mode": "select", "selection": "exploit", "agent": "aggressive",
                            "decision_id": f"dec-{symbol}", "regime": "bull", "policy": "discounted_thompson",
                            "reason": "aggressive has the highest mean reward", "arms": arms,
                            "provenance": {"model_id": "bandit-1", "method_used": "discounted_thompson"}})


GATED_RESULTS = [_regime("SP500", "bull"), _gated_signals("SP500"), _bandit_choice("SP500"),
                 _plan("SP500", "up", 0.7)]


def test_decision_inputs_record_what_each_consulted_model_said() -> None:
    [sp] = decision_inputs(GATED_RESULTS, ["SP500"]).symbols
    assert sp.as_of == "2018-12-31"
    by_tool = [(m.tool, m.model_id, m.model_version, m.method_used) for m in sp.consulted]
    assert by_tool == [("regime_detection", "regime-SP500", 2, "gaussian_hmm"),
                       ("strategy_signals", "ppo-SP500", 3, "ppo"),
                       ("strategy_signals", "rl-balanced-1", None, "rules"),
                       ("agent_selection", "bandit-1", None, "discounted_thompson"),
                       ("execution_plan", "exec-1", 1, "mc_dropout")]
    regime, aggressive, balanced, choice, plan = sp.consulted
    assert regime.output == {"label": "bull", "probability": 0.8}
    assert aggressive.output == {"agent": "aggressive", "action": "long", "target": 0.8, "source": "rl_policy",
                                 "gated": False} and not aggressive.gated
    assert balanced.gated and not balanced.degraded and balanced.output["gated"] is True
    assert balanced.output["gate"] == "failed: Sharpe after costs 0.12 <= buy-and-hold 0.41"
    assert (choice.output["agent"], choice.output["decision_id"], choice.output["mode"]) == (
        "aggressive", "dec-SP500", "exploit")
    assert choice.output["reason"] == "aggressive has the highest mean reward"
    assert choice.output["evidence"].startswith("aggressive earned a mean reward of +0.0019 over 34 rewards")
    assert plan.output == {"size": 0.7, "interval": [pytest.approx(0.6), pytest.approx(0.8)], "timing": "now",
                           "signal": "up"}


def test_gated_inputs_are_listed_apart_from_degraded_ones() -> None:
    inputs = decision_inputs(GATED_RESULTS, ["SP500"])
    assert inputs.degraded_inputs == []
    assert inputs.gated_inputs == [
        "strategy_signals[SP500]: balanced: RL policy rl-balanced-1 failed its gate; momentum rule answered"]
    decision = decide(inputs)
    assert decision.gated and not decision.degraded


def test_the_decisions_why_carries_the_bandits_reason_and_evidence() -> None:
    d = decide(decision_inputs(GATED_RESULTS, ["SP500"])).decisions[0]
    assert (d.followed, d.chosen_agent, d.agent_target, d.decision_id) == ("aggressive", "aggressive", 0.8,
                                                                           "dec-SP500")
    # exploit mode: the bandit's reason is the evidence in plain words, carried as it is
    assert d.why.startswith("aggressive chosen (discounted_thompson bandit, regime bull: aggressive has the "
                            "highest mean reward)")
    explored = [r.model_copy(update={"data": {**r.data, "selection": "explore"}}) if r.tool == "agent_selection"
                else r for r in GATED_RESULTS]
    d = decide(decision_inputs(explored, ["SP500"])).decisions[0]
    assert d.why.startswith("aggressive chosen (discounted_thompson bandit, regime bull: aggressive has the "
                            "highest mean reward; evidence: aggressive earned a mean reward of +0.0019 over 34 "
                            "rewards (estimate +0.0021 +/- 0.0004 on 30 counted pulls))")


def test_decision_from_the_same_results_is_the_same_and_round_trips_as_json() -> None:
    from quantcrew.crew.decision import Decision

    one, two = (decide(decision_inputs(GATED_RESULTS + RESULTS, ["SP500", "NASDAQ"])) for _ in range(2))
    assert one == two
    assert Decision.model_validate_json(one.model_dump_json()) == one


def test_strategy_view_shows_gated_apart_from_degraded() -> None:
    [sp] = strategy_view(GATED_RESULTS, ["SP500"]).symbols
    assert (sp.degraded, sp.gated) == (False, True)
    assert sp.gated_reasons == [
        "strategy_signals[SP500]: balanced: RL policy rl-balanced-1 failed its gate; momentum rule answered"]
