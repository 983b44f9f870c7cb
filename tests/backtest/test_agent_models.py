"""The agents' targets from RL policies retrained per window on the real server: cached, causal, gated."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from quantcrew.backtest.agent_models import ModelBudgetError, ModelSettings, model_plan, rule_plan
from quantcrew.backtest.sizing import EnsembleSettings
from quantcrew.backtest.walk_forward import WalkForwardResult, walk_forward
from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.client import MLClient
from quantcrew.tools.fallbacks import STRATEGY_AGENTS

TINY = ModelSettings(timesteps=256, seeds=1, reward_scales=(1.0,), n_envs=2, algorithm="a2c")
TINY_ENSEMBLE = EnsembleSettings(members=1, epochs=1, folds=1)


@pytest.fixture(scope="module")
def plan(wf_client: MLClient, synth_bars: OHLCV) -> Any:
    seen: list[str] = []
    out = model_plan([synth_bars], 300, client=wf_client, retrain_every=130, settings=TINY,
                     on_progress=lambda d, t, m: seen.append(m))
    return out, seen


def test_model_plan_trains_one_window_per_year_on_earlier_bars_only(plan: Any, synth_bars: OHLCV) -> None:
    out, seen = plan
    dates = synth_bars.iso_timestamps()
    assert [(w.first, w.last, w.train_bars) for w in out.windows] == [
        (dates[300], dates[429], 300), (dates[430], dates[559], 430)]
    assert all(w.trained and set(w.models) == set(STRATEGY_AGENTS) for w in out.windows)
    assert any("trained" in m for m in seen)
    rules = rule_plan([synth_bars]).targets[0]
    for agent in STRATEGY_AGENTS:
        np.testing.assert_array_equal(out.targets[0][agent][:300], rules[agent][:300])  # history: untouched
        for w in out.windows:
            span = slice(w.train_bars, w.train_bars + 130)
            if w.sources[agent] == "rule":  # gated: the rule answers, as live
                np.testing.assert_array_equal(out.targets[0][agent][span], rules[agent][span])
            else:
                assert set(np.unique(out.targets[0][agent][span])) <= {-1.0, 0.0, 1.0}
    assert out.kind == "models" and "RL policies retrained per window" in out.describe()


def test_model_plan_reuses_the_registrys_policies_on_a_rerun(plan: Any, wf_client: MLClient,
                                                              synth_bars: OHLCV) -> None:
    out, _ = plan
    again = model_plan([synth_bars], 300, client=wf_client, retrain_every=130, settings=TINY, budget_s=0.0)
    assert not any(w.trained for w in again.windows)  # nothing trained: a zero budget is enough
    assert [w.models for w in again.windows] == [w.models for w in out.windows]
    for agent in STRATEGY_AGENTS:
        np.testing.assert_array_equal(again.targets[0][agent], out.targets[0][agent])


def test_model_plan_out_of_budget_says_so_and_keeps_what_was_trained(wf_client: MLClient,
                                                                     synth_bars: OHLCV) -> None:
    other = ModelSettings(timesteps=20_000, seeds=1, reward_scales=(1.0,), n_envs=2, algorithm="a2c")
    with pytest.raises(ModelBudgetError, match="budget"):
        model_plan([synth_bars], 300, client=wf_client, retrain_every=130, settings=other, budget_s=0.5,
                   poll_s=0.1)


@pytest.fixture(scope="module")
def model_run(plan: Any, wf_client: MLClient, synth_bars: OHLCV) -> WalkForwardResult:
    dates = synth_bars.iso_timestamps()
    return walk_forward([synth_bars], dates[300], dates[-1], client=wf_client, min_train=300, select_every=5,
                        agents="models", retrain_every=130, model_settings=TINY, ensemble_settings=TINY_ENSEMBLE,
                        seed=7)


def test_walk_forward_with_models_follows_the_policies_it_trained(plan: Any, model_run: WalkForwardResult) -> None:
    result = model_run
    out, _ = plan
    assert result.config["agents"] == "models" and result.config["models"]["timesteps"] == 256
    assert result.config["models"]["ensemble"]["epochs"] == 1
    assert [w.models for w in result.agent_windows] == [w.models for w in out.windows]  # the cached policies
    assert set(result.model_ids) >= {m for w in out.windows for m in w.models.values()}
    assert result.agents_used.startswith("RL policies") and result.summary()["agent_windows"]
    # the same windows size the signals: each window's ensemble and network, trained on the bars before it
    assert [(w.first, w.train_bars) for w in result.sizing_windows] == [(w.first, w.train_bars)
                                                                         for w in out.windows]
    assert {w.ensemble_id for w in result.sizing_windows} <= set(result.model_ids)
    assert any(n.startswith("sizing: execution networks retrained per window") for n in result.notes)


def test_walk_forward_sizes_with_the_network_where_it_passed_and_with_the_rule_elsewhere(
        model_run: WalkForwardResult, wf_client: MLClient, synth_bars: OHLCV) -> None:
    from quantcrew.backtest.sizing import network_sizing
    from quantcrew.crew.decision import signal_confidence
    from quantcrew.tools.fallbacks import execution_fallback

    dates = synth_bars.iso_timestamps()
    result = model_run
    policies = model_plan([synth_bars], 300, client=wf_client, retrain_every=130, settings=TINY, budget_s=0.0)
    sizing = network_sizing([synth_bars], policies.targets, [300, 430], client=wf_client, settings=TINY_ENSEMBLE,
                            deadline=0.0)  # cached by the run above
    for j, record in enumerate(r for r in result.decisions if r.target != 0.0):
        t = dates.index(record.date)
        network = sizing.size(0, record.agent, t)
        if network is not None:
            assert record.size == pytest.approx(network[0])
        elif j % 17 == 0:  # the rule, as the crew's execution tool answers without a network (spot checks)
            target = float(policies.targets[0][record.agent][t])
            rule = execution_fallback(synth_bars.iloc(slice(t - 60, t + 1)), "up" if target > 0 else "down",
                                      signal_confidence(target))
            assert record.size == pytest.approx(min(max(rule["size"]["mean"], 0.0), 1.0))
