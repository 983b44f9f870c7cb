"""The decision pipeline on fixed inputs: direction, size, limits, provenance."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from quantcrew.crew.decision import (
    DecisionInputs,
    ModelOutput,
    ModelRef,
    RiskLimits,
    SymbolInputs,
    decide,
    signal_confidence,
)

TARGETS = {"conservative": 0.0, "aggressive": 1.0, "balanced": 0.5, "contrarian": -1.0}


def _inputs(**overrides: object) -> DecisionInputs:
    symbol = SymbolInputs(symbol="SP500", regime="bull", agent_targets=TARGETS, chosen_agent="aggressive",
                          selection_reason="highest estimate", decision_id="dec-1", size=0.6, timing="now")
    fields: dict[str, object] = {"as_of": "2018-12-31", "symbols": [symbol], "portfolio_var": 0.01,
                                 "var_method": "historical"}
    fields.update(overrides)
    return DecisionInputs.model_validate(fields)


def test_decide_follows_chosen_agent_with_execution_size() -> None:
    decision = decide(_inputs())
    d = decision.decisions[0]
    assert d.followed == "aggressive"
    assert d.action == "long"
    assert d.target_position == pytest.approx(0.6)
    assert d.limits_applied == []
    assert decision.estimated_var == pytest.approx(0.006)
    assert decision.degraded is False


def test_decide_short_agent_gives_negative_target() -> None:
    s = SymbolInputs(symbol="SP500", agent_targets=TARGETS, chosen_agent="contrarian", size=0.4)
    d = decide(DecisionInputs(symbols=[s])).decisions[0]
    assert d.action == "short"
    assert d.target_position == pytest.approx(-0.4)


def test_decide_without_selection_uses_consensus_mean() -> None:
    s = SymbolInputs(symbol="SP500", agent_targets=TARGETS)
    d = decide(DecisionInputs(symbols=[s])).decisions[0]
    assert d.followed == "consensus"
    assert d.conviction == pytest.approx(0.125)
    assert d.target_position == pytest.approx(0.125)  # no plan: size = |conviction|
    assert "no agent was chosen" in d.why


def test_decide_flat_agent_gives_zero_whatever_the_size() -> None:
    s = SymbolInputs(symbol="SP500", agent_targets=TARGETS, chosen_agent="conservative", size=0.9)
    d = decide(DecisionInputs(symbols=[s])).decisions[0]
    assert d.action == "flat"
    assert d.target_position == 0.0


def test_decide_max_position_scales_the_target() -> None:
    d = decide(_inputs(), RiskLimits(max_position=0.5, max_var=1.0)).decisions[0]
    assert d.target_position == pytest.approx(0.3)  # size 0.6 of a 0.5 maximum


def test_decide_max_var_scales_every_target_and_says_so() -> None:
    decision = decide(_inputs(portfolio_var=0.05), RiskLimits(max_var=0.015))
    d = decision.decisions[0]
    # estimated VaR 0.05 * 0.6 = 0.03 > 0.015: scaled by one half
    assert d.target_position == pytest.approx(0.3)
    assert any(note.startswith("max_var") for note in d.limits_applied)
    assert decision.estimated_var == pytest.approx(0.015)


def test_decide_max_gross_scales_a_two_symbol_book() -> None:
    a = SymbolInputs(symbol="A", agent_targets={"aggressive": 1.0}, chosen_agent="aggressive", size=0.8)
    b = SymbolInputs(symbol="B", agent_targets={"aggressive": -1.0}, chosen_agent="aggressive", size=0.8)
    decision = decide(DecisionInputs(symbols=[a, b]), RiskLimits(max_gross=1.0, max_var=1.0))
    assert decision.target("A") == pytest.approx(0.5)
    assert decision.target("B") == pytest.approx(-0.5)
    assert decision.gross_exposure == pytest.approx(1.0)


def test_decide_drawdown_stop_closes_everything() -> None:
    decision = decide(_inputs(drawdown=0.25), RiskLimits(drawdown_stop=0.2))
    d = decision.decisions[0]
    assert d.target_position == 0.0
    assert d.action == "flat"
    assert any(note.startswith("drawdown_stop") for note in d.limits_applied)
    assert decision.gross_exposure == 0.0


def test_decide_records_models_and_degraded_inputs() -> None:
    models = [ModelRef(tool="regime_detection", symbol="SP500", model_id="m1", model_version=3,
                       method_used="gaussian_hmm")]
    decision = decide(_inputs(models=models, degraded_inputs=["strategy_signals[SP500]: no policy"]))
    assert decision.models == models
    assert decision.degraded is True
    assert "DEGRADED" in decision.summary()


def test_decide_is_deterministic() -> None:
    assert decide(_inputs()).model_dump() == decide(_inputs()).model_dump()


def test_decision_target_unknown_symbol_names_the_decided_ones() -> None:
    with pytest.raises(KeyError, match="SP500"):
        decide(_inputs()).target("NASDAQ")


def test_symbol_inputs_target_out_of_range_is_refused() -> None:
    with pytest.raises(ValidationError, match="agent_targets"):
        SymbolInputs(symbol="SP500", agent_targets={"aggressive": 1.5})


def test_decision_inputs_duplicate_symbols_are_refused() -> None:
    s = SymbolInputs(symbol="SP500")
    with pytest.raises(ValidationError, match="unique"):
        DecisionInputs(symbols=[s, s])


def test_signal_confidence_spans_no_view_to_certain() -> None:
    assert signal_confidence(0.0) == pytest.approx(1 / 3)
    assert signal_confidence(-1.0) == pytest.approx(1.0)
    assert signal_confidence(2.0) == pytest.approx(1.0)


def test_gated_inputs_are_shown_but_do_not_make_the_decision_degraded() -> None:
    gated = ["strategy_signals[SP500]: balanced: RL policy rl-1 failed its gate; momentum rule answered"]
    decision = decide(_inputs(gated_inputs=gated))
    assert (decision.degraded, decision.gated, decision.gated_inputs) == (False, True, gated)
    summary = decision.summary()
    assert f"GATED (rule by design): {gated[0]}" in summary and "DEGRADED" not in summary


def test_degraded_and_gated_inputs_are_both_printed() -> None:
    decision = decide(_inputs(gated_inputs=["execution_plan[SP500]: gate failed"],
                              degraded_inputs=["regime_detection[SP500]: server unavailable"]))
    assert decision.degraded and decision.gated
    lines = decision.summary().splitlines()
    assert "GATED (rule by design): execution_plan[SP500]: gate failed" in lines
    assert "DEGRADED: regime_detection[SP500]: server unavailable" in lines


def test_decision_carries_the_chosen_agents_target_date_and_consulted_models() -> None:
    consulted = [ModelOutput(tool="regime_detection", model_id="regime-1", method_used="gaussian_hmm",
                             output={"label": "bull", "probability": 0.8})]
    s = SymbolInputs(symbol="SP500", as_of="2018-12-31", agent_targets=TARGETS, chosen_agent="balanced",
                     decision_id="dec-1", size=0.6, consulted=consulted)
    d = decide(DecisionInputs(symbols=[s])).decisions[0]
    assert (d.as_of, d.chosen_agent, d.agent_target, d.decision_id) == ("2018-12-31", "balanced", 0.5, "dec-1")
    assert d.consulted == consulted and d.target_position == pytest.approx(0.6)


def test_chosen_agent_without_a_signal_has_no_agent_target() -> None:
    s = SymbolInputs(symbol="SP500", agent_targets={"aggressive": 1.0}, chosen_agent="contrarian")
    d = decide(DecisionInputs(symbols=[s])).decisions[0]
    assert (d.followed, d.chosen_agent, d.agent_target) == ("consensus", "contrarian", None)
