"""Champion against challenger for regime models, RL policies and execution networks, through the real app."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.data.synthetic import generate_ar_market
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.lineage import CompareResponse
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.compare_losses import predictive_loss
from quantcrew.ml_server.services.execution.fit import ExecTrainConfig
from quantcrew.ml_server.services.execution.inputs import EXECUTION_INPUTS
from quantcrew.ml_server.services.execution.model import ExecutionModel
from quantcrew.ml_server.services.execution.net import ExecutionConfig
from quantcrew.ml_server.services.regime.features import build_features
from quantcrew.ml_server.services.regime.filter import forward_filter, gaussian_log_likelihood, stationary_distribution
from quantcrew.ml_server.services.regime.model import RegimeDetector
from tests.support.jobs import train_policy
from tests.support.replies import invalid_input


def _compare(client: TestClient, champion: str, challenger: str, **body: Any) -> CompareResponse:
    resp = client.post("/v1/models/compare", json={"champion_id": champion, "challenger_id": challenger, **body})
    assert resp.status_code == 200, resp.text
    return CompareResponse.model_validate(resp.json())


# -- regime ----------------------------------------------------------------------------------------


def _calm(n: int, seed: int) -> dict[str, Any]:
    return to_payload_dict(generate_ar_market(n, mu=0.0003, phi=0.0, sigma=0.005, seed=seed))


def _wild(n: int, seed: int) -> dict[str, Any]:
    return to_payload_dict(generate_ar_market(n, mu=-0.001, phi=0.0, sigma=0.04, seed=seed))


def _fit_regime(client: TestClient, data: dict[str, Any], name: str) -> str:
    resp = client.post("/v1/regime/fit", json={"data": data, "n_states": 2, "name": name, "n_restarts": 1})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["model"]["model_id"])


def test_regime_compare_prefers_the_model_fitted_on_bars_like_the_scored_ones(client: TestClient) -> None:
    calm, wild = _fit_regime(client, _calm(400, 1), "rg"), _fit_regime(client, _wild(400, 2), "rg")
    recent = _calm(160, 3)
    body = {"data": recent, "score_from": recent["timestamps"][40], "min_samples": 30}
    up = _compare(client, wild, calm, **body)
    assert up.family == "regime" and up.decision == "promote" and up.passed
    assert up.n == 120 and up.loss.startswith("negative one-step-ahead predictive log-likelihood")
    assert up.challenger_mean_loss is not None and up.champion_mean_loss is not None
    assert up.challenger_mean_loss < up.champion_mean_loss
    assert up.verdict.span_start is not None and up.verdict.span_start.startswith(recent["timestamps"][40][:10])
    down = _compare(client, calm, wild, **body)
    assert down.decision == "reject" and not down.passed
    # and the other way round on wild bars
    wild_recent = _wild(160, 4)
    assert _compare(client, calm, wild, data=wild_recent, min_samples=30).decision == "promote"
    few = _compare(client, wild, calm, data=recent, score_from=recent["timestamps"][-10], min_samples=30)
    assert few.decision == "insufficient" and few.n == 10


def test_regime_predictive_losses_sum_to_the_forward_log_likelihood_on_the_raw_feature_scale(
        client: TestClient) -> None:
    """Chain rule: the one-step predictive log-densities add up to the filter's total log-likelihood."""
    model_id = _fit_regime(client, _calm(300, 5), "rg-chain")
    registry: ModelRegistry = client.app.state.registry  # type: ignore[attr-defined]
    detector, _ = adapter.rebuild(registry, model_id, RegimeDetector)
    assert detector.hmm_ is not None
    bars = bars_from_payload(OHLCVPayload.model_validate(_wild(120, 6)), min_rows=2)
    losses = predictive_loss(detector, bars)
    matrix, _ = build_features(bars, detector.features_, vol_window=detector.vol_window,
                               vol_transform=detector.vol_transform_, floors=detector.feature_floors_)
    z = (matrix.values - detector.feature_mean_) / detector.feature_scale_
    log_lik = gaussian_log_likelihood(z, np.asarray(detector.hmm_.means_), np.asarray(detector.hmm_.covars_))
    _, total = forward_filter(log_lik, detector.transmat, stationary_distribution(detector.transmat))
    jacobian = float(matrix.log_jacobian.sum()) - len(z) * float(np.log(detector.feature_scale_).sum())
    assert losses.shape == (len(bars) - 1,) and np.all(np.isfinite(losses))
    np.testing.assert_allclose(-losses.sum(), total + jacobian, rtol=1e-9, atol=1e-6)


def test_regime_compare_refuses_versions_of_other_features(client: TestClient) -> None:
    data = _calm(300, 7)
    ranged = _fit_regime(client, data, "rg-f")
    resp = client.post("/v1/regime/fit", json={"data": data, "n_states": 2, "features": ["log_return"],
                                               "n_restarts": 1})
    assert resp.status_code == 200, resp.text
    returns = resp.json()["model"]["model_id"]
    refused = client.post("/v1/models/compare", json={"champion_id": ranged, "challenger_id": returns, "data": data})
    assert "challenger_id" in str(invalid_input(refused))
    no_bars = client.post("/v1/models/compare", json={
        "champion_id": ranged, "challenger_id": ranged,
        "features": {"timestamps": ["2020-01-01"], "columns": ["a"], "values": [[1.0]]}, "target": [1.0]})
    assert "data" in str(invalid_input(no_bars))


# -- rl --------------------------------------------------------------------------------------------


def test_rl_compare_of_identical_policies_never_promotes_and_scores_each_bar_with_a_next_bar(
        client: TestClient) -> None:
    bars = to_payload_dict(generate_regime_market(400, seed=5).bars)
    policy = train_policy(client, bars)
    same = _compare(client, policy, policy, data=bars, score_from=bars["timestamps"][-61], min_samples=30)
    # the last 61 bars scored but the very last (it has no next bar)
    assert same.family == "rl" and same.n == 60 and same.decision == "reject" and not same.passed
    assert same.champion_mean_loss == same.challenger_mean_loss and same.loss.startswith("negative net return")
    assert same.verdict.p_value is not None and not same.verdict.p_value < 0.05  # alpha: the default
    # costs are charged: dearer trading never lowers the mean loss
    dear = _compare(client, policy, policy, data=bars, score_from=bars["timestamps"][-61], cost_bps=200.0)
    assert dear.champion_mean_loss is not None and same.champion_mean_loss is not None
    assert dear.champion_mean_loss >= same.champion_mean_loss
    few = _compare(client, policy, policy, data=bars, score_from=bars["timestamps"][-6], min_samples=30)
    assert few.decision == "insufficient" and few.n == 5
    short = client.post("/v1/models/compare", json={"champion_id": policy, "challenger_id": policy,
                                                    "data": {k: v[:30] if isinstance(v, list) else v
                                                             for k, v in bars.items()}})
    assert "data" in str(invalid_input(short))


# -- execution -------------------------------------------------------------------------------------


def _network(registry: ModelRegistry, size: float, seed: int) -> str:
    """A real tiny fit of a network taught to size every signal at ``size``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, len(EXECUTION_INPUTS)))
    x[:, 0] = rng.choice([-1.0, 1.0], 200)
    x[:, 1:5] = rng.uniform(0, 1, (200, 4))
    net = ExecutionModel(ExecutionConfig(hidden=(8,)), train=ExecTrainConfig(epochs=30, lr=1e-2, seed=seed)).fit(
        x, np.full(200, size), np.zeros(200, dtype=np.int64))
    return adapter.store(registry, net, name="execution-CMP", metadata={"symbol": "CMP"}).model_id


def test_execution_compare_scores_the_sized_returns_of_the_signals_sent(client: TestClient) -> None:
    registry: ModelRegistry = client.app.state.registry  # type: ignore[attr-defined]
    bold, timid = _network(registry, 1.0, 1), _network(registry, 0.0, 2)
    bars = to_payload_dict(generate_regime_market(200, seed=9).bars)
    close = np.asarray(bars["close"])
    k = 100
    # signals that foresee the next bar: a bigger position earns more on every bar
    nxt = np.sign(np.diff(close[-k - 1:]))[1:].tolist() + [1.0]
    signals = [{"signal": "up" if s > 0 else "down", "confidence": 0.7} for s in nxt]
    body = {"data": bars, "signals": signals, "min_samples": 30}
    up = _compare(client, timid, bold, **body)
    assert up.family == "execution" and up.decision == "promote" and up.n == k - 1
    assert up.challenger_mean_loss is not None and up.champion_mean_loss is not None
    assert up.challenger_mean_loss < up.champion_mean_loss < 0.0
    assert _compare(client, bold, timid, **body).decision == "reject"
    same = _compare(client, bold, bold, **body)
    assert same.decision == "reject" and same.champion_mean_loss == same.challenger_mean_loss
    scored = _compare(client, timid, bold, **body, score_from=bars["timestamps"][-21])
    assert scored.n == 20
    missing = client.post("/v1/models/compare", json={"champion_id": timid, "challenger_id": bold, "data": bars})
    assert "signals" in str(invalid_input(missing))
    too_early = client.post("/v1/models/compare", json={"champion_id": timid, "challenger_id": bold, "data": bars,
                                                        "signals": signals + signals[:50]})
    assert "data" in str(invalid_input(too_early))
    too_many = client.post("/v1/models/compare", json={"champion_id": timid, "challenger_id": bold,
                                                       "data": bars, "signals": signals * 3})
    assert too_many.status_code == 422
