"""Drift references: quantile bins and samples built right, stored and read back, and stored by the training of every
stateful family whose predictions are logged, with the feature names and output the prediction log records."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.config.settings import load_settings
from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.anomaly import AnomalyFitRequest
from quantcrew.ml_server.schemas.cluster import ClusterFitRequest
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.ensemble import EnsembleTrainResult
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.schemas.regime import REGIME_LABELS, RegimeFitRequest
from quantcrew.ml_server.schemas.rl import RLTrainRequest, RLTrainResult
from quantcrew.ml_server.schemas.supervised import SupervisedFitRequest
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.anomaly import service as anomaly
from quantcrew.ml_server.services.anomaly.model import AnomalyDetector
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.cluster import service as cluster
from quantcrew.ml_server.services.execution.inputs import EXECUTION_INPUTS
from quantcrew.ml_server.services.monitor.reference import (
    ReferenceStore,
    bin_index,
    build_reference,
    save_reference,
    summarise,
)
from quantcrew.ml_server.services.regime import service as regime
from quantcrew.ml_server.services.regime.model import RegimeDetector
from quantcrew.ml_server.services.rl import market as rl_market
from quantcrew.ml_server.services.rl import training as rl_training
from quantcrew.ml_server.services.supervised import service as supervised
from tests.support.jobs import wait_job

FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(FINITE, min_size=2, max_size=400), bins=st.integers(2, 20), rows=st.integers(1, 50))
def test_summary_bins_hold_the_training_shares_and_the_sample_is_bounded(values: list[float], bins: int,
                                                                          rows: int) -> None:
    summary = summarise(values, bins=bins, rows=rows)
    assert summary is not None and summary.n == len(values)
    edges = np.array(summary.edges)
    assert np.all(np.diff(edges) > 0) and len(summary.proportions) == len(edges) + 1 <= bins
    assert sum(summary.proportions) == pytest.approx(1.0)
    counts = np.bincount(bin_index(edges, np.array(values)), minlength=len(summary.proportions))
    assert np.allclose(counts / len(values), summary.proportions)
    assert summary.proportions[-1] > 0  # no edge at the maximum: the top bin is never empty by construction
    assert 1 <= len(summary.sample) <= rows and set(summary.sample) <= set(values)


def test_quantile_bins_of_a_continuous_feature_are_near_equal() -> None:
    x = np.random.default_rng(0).normal(size=5000)
    summary = summarise(x, bins=10, rows=200)
    assert summary is not None and len(summary.proportions) == 10
    assert np.allclose(summary.proportions, 0.1, atol=0.002) and len(summary.sample) == 200


def test_non_finite_values_are_left_out_and_too_few_give_no_summary() -> None:
    summary = summarise([1.0, np.nan, 2.0, np.inf, 3.0], bins=4, rows=10)
    assert summary is not None and summary.n == 3
    assert summarise([np.nan, 1.0], bins=4, rows=10) is None


def test_a_reference_round_trips_through_the_store_and_its_quality_too(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ref = build_reference("m-1", "regime", ["a", "b"], rng.normal(size=(300, 2)), rng.random(300), bins=5, rows=50)
    with ReferenceStore(tmp_path / "r.db") as store:
        assert store.get("m-1") is None and store.get_quality("m-1") is None
        store.put(ref)
        store.put_quality("m-1", 0.75, 120)
        back = store.get("m-1")
        assert back is not None and back.features == ref.features and back.output == ref.output
        assert back.feature_names == ["a", "b"] and back.family == "regime"
        assert store.get_quality("m-1") == (0.75, 120)
        assert store.delete("m-1") and store.get("m-1") is None and store.get_quality("m-1") is None


def test_names_must_match_the_matrix() -> None:
    with pytest.raises(ValueError, match="3 feature names"):
        build_reference("m", "regime", ["a", "b", "c"], np.zeros((10, 2)), None)


def test_save_reference_skips_a_reply_without_model_id(tmp_path: Path) -> None:
    assert save_reference(tmp_path / "r.db", None, "regime", ["a"], np.zeros((5, 1)), None) is None


# -- every family's training stores one ----------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")


def _stored(registry: ModelRegistry, model_id: str | None) -> Any:
    assert model_id is not None
    with ReferenceStore(registry.db_path) as store:
        ref = store.get(model_id)
    assert ref is not None, f"no reference stored for {model_id}"
    return ref


@pytest.fixture(scope="module")
def market_payload() -> dict[str, Any]:
    return to_payload_dict(generate_regime_market(400, seed=5).bars)


def test_regime_fit_stores_its_hmm_features_and_label_indexes(registry: ModelRegistry,
                                                              market_payload: dict[str, Any]) -> None:
    reply = regime.fit(RegimeFitRequest(data=OHLCVPayload(**market_payload), n_states=2, n_restarts=1), registry,
                       min_rows=30)
    ref = _stored(registry, reply.model_id)
    detector, _ = adapter.rebuild(registry, reply.model_id or "", RegimeDetector)
    assert ref.family == "regime" and ref.feature_names == list(detector.features_)
    assert ref.features[detector.features_[0]].n == len(market_payload["close"]) - 1
    assert set(ref.output.sample) <= {float(REGIME_LABELS.index(label)) for label in reply.labels}


def test_anomaly_fit_stores_its_features_and_scores(registry: ModelRegistry, market_payload: dict[str, Any]) -> None:
    reply = anomaly.fit(AnomalyFitRequest(data=OHLCVPayload(**market_payload), n_estimators=20), registry,
                        min_rows=30)
    ref = _stored(registry, reply.model_id)
    detector, _ = adapter.rebuild(registry, reply.model_id or "", AnomalyDetector)
    assert ref.feature_names == list(detector.features_)
    assert ref.output.n == len(reply.scores) and min(ref.output.sample) >= min(reply.scores) - 1e-12


def test_supervised_fit_stores_the_training_rows_and_p_class_1(registry: ModelRegistry) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(int).tolist()
    req = SupervisedFitRequest(features=MatrixPayload(columns=["f1", "f2", "f3"], values=x.tolist()), target=y,
                               task="classification", method="random_forest", n_estimators=10,
                               test_fraction=0.25)
    reply = supervised.fit(req, registry, min_rows=30)
    ref = _stored(registry, reply.model_id)
    assert ref.feature_names == ["f1", "f2", "f3"] and ref.features["f1"].n == reply.n_train
    assert min(ref.output.sample) >= 0.0 and max(ref.output.sample) <= 1.0  # probabilities, not labels
    assert len(set(ref.output.sample)) > 2


def test_cluster_fit_stores_the_rows_and_cluster_indexes(registry: ModelRegistry) -> None:
    rng = np.random.default_rng(3)
    x = np.vstack([rng.normal(0, 1, (60, 2)), rng.normal(8, 1, (60, 2))])
    req = ClusterFitRequest(data=MatrixPayload(columns=["u", "v"], values=x.tolist()), method="kmeans", n_clusters=2,
                            mode="observations")
    reply = cluster.fit(req, registry, min_rows=10)
    ref = _stored(registry, reply.model_id)
    assert ref.feature_names == ["u", "v"] and set(ref.output.sample) == {0.0, 1.0}


def test_rl_training_stores_the_scaled_features_and_positions(registry: ModelRegistry,
                                                              market_payload: dict[str, Any]) -> None:
    big = to_payload_dict(generate_regime_market(600, seed=3).bars)
    req = RLTrainRequest.model_validate({"data": big, "agents": ["aggressive"], "algorithm": "a2c", "timesteps": 256,
                                         "regime_features": False, "n_envs": 2, "seed": 7, "seeds": 1,
                                         "grid": {"reward_scale": [1.0]}})
    bars = bars_from_payload(req.data)
    plan = rl_training.TrainingPlan(req, bars, rl_market.split_index(bars, req.train_end, req.train_fraction))

    class _Ctx:
        job_id, cancelled = "job", False

        def report(self, **kw: Any) -> None:
            return None

    result = RLTrainResult.model_validate(rl_training.train_agents(plan, registry, cast(Any, _Ctx())))
    policy = result.policies[0]
    ref = _stored(registry, policy.model_id)
    info = registry.get(policy.model_id)
    assert ref.family == "rl" and ref.feature_names == list(info.metadata["feature_names"])
    assert all(-1.0 <= v <= 1.0 for v in ref.output.sample)


def test_ensemble_training_stores_references_for_the_ensemble_and_its_execution_network(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.ml_server.routes.test_ensemble import TINY, _cycles

    settings_ = load_settings(home=tmp_path_factory.mktemp("drift-ensemble"))
    with TestClient(create_app(settings_)) as client:
        resp = client.post("/v1/ensemble/train", json={"data": _cycles(500), **TINY, "epochs": 3})
        assert resp.status_code == 202, resp.text
        job = wait_job(client, resp.json()["job_id"], 180.0)
        assert job.status == "succeeded", job.error
        result = EnsembleTrainResult.model_validate(job.result)
    with ReferenceStore(settings_.registry_db) as store:
        ens = store.get(result.model.model_id)
        assert ens is not None and ens.feature_names == list(result.features)
        assert ens.output is not None and all(0.0 <= v <= 1.0 for v in ens.output.sample)  # P(up)
        assert result.execution_model is not None
        ex = store.get(result.execution_model.model_id)
        assert ex is not None and ex.feature_names == [n for n in EXECUTION_INPUTS if n in ex.features]
        assert ex.output is not None and all(-1.0 <= v <= 1.0 for v in ex.output.sample)  # signed sizes
