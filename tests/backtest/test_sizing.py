"""Execution networks retrained per window on the real server: causal, never deployed, cached, gated."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from quantcrew.backtest.agent_models import ModelBudgetError, rule_plan
from quantcrew.backtest.sizing import EnsembleSettings, network_sizing
from quantcrew.data.loaders import payload_hash
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.tools.client import MLClient
from quantcrew.tools.fallbacks import STRATEGY_AGENTS

TINY = EnsembleSettings(members=1, epochs=1, folds=1)
STARTS = [500, 700]


@pytest.fixture(scope="module")
def long_bars() -> OHLCV:
    """900 bars of a regime-switching market: enough out-of-sample rows for an execution network."""
    return generate_regime_market(900, seed=3).bars


@pytest.fixture(scope="module")
def sized(wf_client: MLClient, long_bars: OHLCV) -> Any:
    targets = rule_plan([long_bars]).targets
    seen: list[str] = []
    plan = network_sizing([long_bars], targets, STARTS, client=wf_client, settings=TINY,
                          on_progress=lambda d, t, m: seen.append(m))
    return plan, targets, seen


def test_network_sizing_trains_each_window_on_the_bars_before_it_only(sized: Any, wf_client: MLClient,
                                                                      long_bars: OHLCV) -> None:
    plan, _, seen = sized
    dates = long_bars.iso_timestamps()
    assert [(w.first, w.last, w.train_bars) for w in plan.windows] == [
        (dates[500], dates[699], 500), (dates[700], dates[899], 700)]
    for w in plan.windows:
        ensemble = wf_client.get_model(w.ensemble_id)
        assert ensemble.metadata["data_hash"] == payload_hash(long_bars.iloc(slice(0, w.train_bars)))
        assert ensemble.metadata["train_end"][:10] < w.first and w.trained
        assert w.execution_id is not None
        assert wf_client.get_model(w.execution_id).metadata["ensemble_model_id"] == w.ensemble_id
    assert any("training SYNTH's ensemble" in m for m in seen)


def test_network_sizing_deploys_nothing(sized: Any, wf_client: MLClient) -> None:
    plan, _, _ = sized
    ours = {x for w in plan.windows for x in (w.ensemble_id, w.execution_id)}
    assert not ours & {d.model_id for d in wf_client.ensemble_deployments().deployments}


def test_network_sizes_only_the_windows_whose_network_passed_its_gate(sized: Any, wf_client: MLClient) -> None:
    plan, _, _ = sized
    for w, start in zip(plan.windows, STARTS, strict=True):
        gate = wf_client.get_model(str(w.execution_id)).metadata["gate"]
        assert (w.source == "execution_network") == bool(gate["passed"])
        span = slice(start, start + 200)
        for agent in STRATEGY_AGENTS:
            rows = plan.sizes[0][agent][span]
            if w.source == "rule":
                assert np.isnan(rows).all() and plan.size(0, agent, start) is None
            else:
                assert np.isfinite(rows).all()
                assert ((rows[:, 0] >= 0.0) & (rows[:, 0] <= 1.0)).all()
                assert (rows[:, 1] <= rows[:, 0] + 1e-9).all() and (rows[:, 0] <= rows[:, 2] + 1e-9).all()
    for agent in STRATEGY_AGENTS:  # the history before the first window is never sized by a network
        assert np.isnan(plan.sizes[0][agent][:STARTS[0]]).all()
    assert "execution networks retrained per window (2 symbol-windows" in plan.describe()


def test_network_sizing_of_a_window_is_the_networks_plan_for_each_agents_signal(
        sized: Any, wf_client: MLClient, long_bars: OHLCV) -> None:
    from quantcrew.crew.decision import signal_confidence
    from quantcrew.data.loaders import to_payload_dict
    from quantcrew.ml_server.schemas.execution import ExecutionRequest

    plan, targets, _ = sized
    used = [(w, s) for w, s in zip(plan.windows, STARTS, strict=True) if w.source == "execution_network"]
    assert used, "on this market (seed 0) the first window's network passes its gate"
    w, start = used[0]
    for agent, t in [("aggressive", start + 3), ("contrarian", start + 77), ("balanced", start + 199)]:
        x = float(targets[0][agent][t])
        signal = {"signal": "up" if x > 0 else "down" if x < 0 else "flat", "confidence": signal_confidence(x)}
        single = wf_client.execution_plan(ExecutionRequest.model_validate({
            "signals": [signal], "data": to_payload_dict(long_bars.iloc(slice(0, t + 1))),
            "model_id": w.execution_id, "samples": 1000, "seed": 1})).plans[0].size
        # the same network, signal and market as one request with bars <= t: equal within MC noise
        assert plan.sizes[0][agent][t][0] == pytest.approx(single.mean, abs=5 * single.std / 30 ** 0.5 + 1e-6)


def test_network_sizing_reuses_the_registrys_models_on_a_rerun(sized: Any, wf_client: MLClient,
                                                               long_bars: OHLCV) -> None:
    plan, targets, _ = sized
    import time

    again = network_sizing([long_bars], targets, STARTS, client=wf_client, settings=TINY,
                           deadline=time.monotonic())  # nothing to train: a spent budget is enough
    assert not any(w.trained for w in again.windows)
    assert [w.execution_id for w in again.windows] == [w.execution_id for w in plan.windows]
    for agent in STRATEGY_AGENTS:
        np.testing.assert_array_equal(again.sizes[0][agent], plan.sizes[0][agent])


def test_network_sizing_out_of_budget_says_so(wf_client: MLClient, long_bars: OHLCV) -> None:
    import time

    other = EnsembleSettings(members=1, epochs=30, folds=1, seed=5)
    with pytest.raises(ModelBudgetError, match="budget"):
        network_sizing([long_bars], rule_plan([long_bars]).targets, STARTS, client=wf_client, settings=other,
                       deadline=time.monotonic() + 0.3, poll_s=0.1)
