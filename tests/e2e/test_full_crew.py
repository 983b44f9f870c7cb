"""The full crew (four agents, one decision) against a real ML server: sequential, hierarchical,
budgets, and the decision being the pipeline's whatever the LLM writes."""

from __future__ import annotations

import pytest

from quantcrew.config.settings import Settings
from quantcrew.crew.budget import RunBudget
from quantcrew.crew.decision import Decision, decide
from quantcrew.crew.kickoff import CrewRunError, run
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.server_process import LocalServer
from quantcrew.crew.views import RegimeView, RiskView, StrategyView, decision_inputs

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

INPUTS = {"symbols": "SP500,NASDAQ", "lookback": 400, "end_date": "2012-06-29"}


def test_full_crew_sequential_gives_views_and_one_decision_per_symbol(live_server: LocalServer, settings: Settings,
                                                                      refused: list[str]) -> None:
    settings.client.url = live_server.url
    outcome = run(INPUTS, settings)
    assert outcome.status == "degraded"  # nothing trained on this server: rules answer for RL and ensemble
    assert list(outcome.views) == ["market_regimes", "portfolio_risk", "strategy_review", "portfolio_decision"]
    regimes = RegimeView.model_validate(outcome.views["market_regimes"])
    assert [r.symbol for r in regimes.regimes] == ["SP500", "NASDAQ"]
    assert all(r.as_of == "2012-06-29" and not r.degraded and r.method_used for r in regimes.regimes)
    risk = RiskView.model_validate(outcome.views["portfolio_risk"])
    assert risk.var_95 is not None and risk.var_method == "filtered_historical" and risk.weights == [0.5, 0.5]
    strategy = StrategyView.model_validate(outcome.views["strategy_review"])
    assert {a.agent for a in strategy.symbols[0].signals} == {"conservative", "aggressive", "balanced", "contrarian"}
    decision = outcome.decision
    assert decision is not None
    assert Decision.model_validate(outcome.views["portfolio_decision"]) == decision
    assert [d.symbol for d in decision.decisions] == ["SP500", "NASDAQ"]
    for d in decision.decisions:
        assert d.regime == regimes.regimes[[r.symbol for r in regimes.regimes].index(d.symbol)].regime
        assert d.followed in {"conservative", "aggressive", "balanced", "contrarian"}
        assert d.decision_id is not None and d.decision_id.startswith("dec-")
        assert abs(d.target_position) <= decision.limits.max_position
    # the pipeline is the same code on the stored inputs: re-deciding gives the same decision
    again = decide(decision_inputs(outcome.tool_results, ["SP500", "NASDAQ"]), decision.limits)
    assert again == decision
    # every model id of the regime fits is recorded
    regime_ids = {r.model_id for r in regimes.regimes}
    assert regime_ids <= {m.model_id for m in decision.models}
    assert decision.degraded  # no trained policies or ensemble on this server: rules answered, and it says so
    assert any(x.startswith("strategy_signals[SP500]") for x in decision.degraded_inputs)
    stored = RunsStore(settings.runs_db).get_run(outcome.run_id)
    assert stored is not None and stored["decision"] == decision.model_dump(mode="json")
    assert stored["llm_calls"] == outcome.llm_calls == 8  # two turns per task, four tasks
    assert refused == []


def test_full_crew_hierarchical_manager_delegates_and_decides(live_server: LocalServer, settings: Settings,
                                                              refused: list[str]) -> None:
    settings.client.url = live_server.url
    outcome = run(INPUTS, settings, process="hierarchical")
    assert outcome.status == "degraded"
    assert outcome.decision is not None
    assert [d.symbol for d in outcome.decision.decisions] == ["SP500", "NASDAQ"]
    assert {r.tool for r in outcome.tool_results} >= {"regime_detection", "risk_metrics", "strategy_signals",
                                                       "portfolio_decision"}
    assert refused == []


def test_full_crew_wall_time_budget_stops_the_run(live_server: LocalServer, settings: Settings,
                                                  refused: list[str]) -> None:
    settings.client.url = live_server.url
    ticks = iter(range(1000))
    budget = RunBudget(max_seconds=2.5, clock=lambda: float(next(ticks)))  # one "second" per check
    with pytest.raises(CrewRunError) as caught:
        run(INPUTS, settings, budget=budget)
    assert caught.value.status == "budget_exceeded"
    assert "wall-time budget of 2.5 s exceeded" in str(caught.value)
    stored = RunsStore(settings.runs_db).get_run(caught.value.run_id or "")
    assert stored is not None and stored["status"] == "budget_exceeded"
    assert "wall-time budget" in stored["error"]


def test_full_crew_with_server_down_decides_from_fallbacks(settings: Settings, refused: list[str]) -> None:
    from quantcrew.crew.server_process import free_port

    settings.client.url = f"http://127.0.0.1:{free_port()}"
    settings.client.retries = 0
    outcome = run({"symbols": "SP500", "lookback": 300}, settings)
    assert outcome.status == "degraded" and outcome.decision is not None
    [d] = outcome.decision.decisions
    assert outcome.decision.degraded and d.decision_id is None  # round-robin: nothing to reward
    assert "round-robin" in d.why


def test_full_crew_with_a_real_llm_provider_still_stores_the_pipeline_decision(
        live_server: LocalServer, settings: Settings, refused: list[str]) -> None:
    from crewai import LLM

    from tests.support.openai_stub import openai_stub

    settings.client.url = live_server.url
    # an LLM that calls one tool per task and then writes prose, never JSON, never the decision tool
    with openai_stub("regime_detection", {"symbol": "SP500", "lookback": 300}, final_text="My view.") as stub:
        llm = LLM(model="openai/gpt-4o-mini", base_url=stub.base_url, api_key="test-key")
        outcome = run({"symbols": "SP500", "lookback": 300}, settings, llm=llm)
    assert outcome.status == "succeeded" and stub.unhandled == []
    assert outcome.llm_calls == len(stub.requests) > 4
    regimes = RegimeView.model_validate(outcome.views["market_regimes"])
    assert [r.symbol for r in regimes.regimes] == ["SP500"]  # built from the tool result, not the prose
    assert outcome.decision is not None and [d.symbol for d in outcome.decision.decisions] == ["SP500"]
    assert outcome.tool_results[-1].tool == "portfolio_decision"  # the pipeline ran as the last step
    stored = RunsStore(settings.runs_db).get_run(outcome.run_id)
    assert stored is not None and "gpt-4o-mini" in str(stored["llm"])
    assert refused == []
