"""The prediction log, outcomes and live quality over HTTP, against the real app: every inference route with a
stored model leaves one record, outcomes are idempotent, and quality reads them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings, load_settings
from quantcrew.data import generate_regime_market, load_sample, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.anomaly.features import build_features as anomaly_features
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES
from quantcrew.ml_server.services.ensemble.model import EnsembleSpec, pack_state
from quantcrew.ml_server.services.ensemble.nets import NetConfig, build_net
from quantcrew.ml_server.services.execution.fit import ExecTrainConfig
from quantcrew.ml_server.services.execution.inputs import EXECUTION_INPUTS
from quantcrew.ml_server.services.execution.model import ExecutionModel
from quantcrew.ml_server.services.execution.net import ExecutionConfig
from quantcrew.ml_server.services.monitor.predictions import PredictionLog, PredictionRecord
from quantcrew.ml_server.services.regime.model import RegimeDetector
from tests.ml_server.services.supervised.test_service import separable_data
from tests.support.jobs import wait_job

RL_FAST = {"agents": ["aggressive"], "algorithm": "a2c", "timesteps": 256, "regime_features": False, "n_envs": 2,
           "seeds": 1, "grid": {"reward_scale": [1.0]}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = load_settings(home=tmp_path_factory.mktemp("predlog-home"))
    settings.monitor.log_flush_ms = 20.0
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def sp500() -> dict[str, Any]:
    return to_payload_dict(load_sample("SP500").tail(300))


def _log(client: TestClient) -> PredictionLog:
    log: PredictionLog = client.app.state.predictions  # type: ignore[attr-defined]
    assert log.flush()
    return log


def _one(client: TestClient, model_id: str) -> PredictionRecord:
    [record] = _log(client).recent(model_id, 10)
    return record


def _seed_ensemble(registry: ModelRegistry, name: str, seed: int) -> str:
    """An ensemble with random weights, stored as the training job stores one."""
    f, window = len(FEATURE_NAMES), 8
    configs = {a: NetConfig(arch=a, members=2, n_features=f, window=window, hidden=8, heads=2)
               for a in ("lstm", "transformer")}
    spec = EnsembleSpec(configs=configs, temperatures={a: 1.0 for a in configs},
                        mc_temperatures={a: 1.0 for a in configs}, weights={a: 0.5 for a in configs},
                        scaler_mean=(0.0,) * f, scaler_std=(1.0,) * f, feature_names=FEATURE_NAMES, window=window,
                        horizon=5, up_threshold=0.005, down_threshold=0.005, symbol="LOG")
    nets = {a: build_net(c, seed=seed + i) for i, (a, c) in enumerate(configs.items())}
    return registry.save(family="ensemble", name=name, method="lstm+transformer", obj=pack_state(nets), fmt="torch",
                         metadata=spec.to_metadata()).model_id


def test_regime_predict_logs_its_label_and_the_last_bars_hmm_features(served: TestClient,
                                                                      sp500: dict[str, Any]) -> None:
    fit = served.post("/v1/regime/fit", json={"data": sp500, "name": "reg", "n_states": 2, "n_restarts": 1})
    model_id = fit.json()["model_id"]
    reply = served.post("/v1/regime/predict", json={"data": sp500, "model_id": model_id}).json()
    rec = _one(served, model_id)
    assert (rec.family, rec.route, rec.name, rec.version) == ("regime", "/v1/regime/predict", "reg", 1)
    assert rec.label == reply["current_label"] and rec.confidence == pytest.approx(reply["current_probability"])
    assert rec.request_hash == reply["data_hash"] and rec.as_of == sp500["timestamps"][-1][:10]
    detector, _ = adapter.rebuild(served.app.state.registry, model_id, RegimeDetector)  # type: ignore[attr-defined]
    full = detector._features(bars_from_payload(OHLCVPayload.model_validate(sp500), min_rows=2))[-1]
    assert rec.features == pytest.approx(dict(zip(detector.features_, full.tolist(), strict=True)))


def test_anomaly_score_logs_the_last_bars_score_and_features(served: TestClient, sp500: dict[str, Any]) -> None:
    fit = {"data": sp500, "name": "anom", "n_estimators": 50}
    model_id = served.post("/v1/anomaly/fit", json=fit).json()["model_id"]
    reply = served.post("/v1/anomaly/score", json={"data": sp500, "model_id": model_id}).json()
    rec = _one(served, model_id)
    assert rec.output == pytest.approx(reply["current_score"]) and rec.route == "/v1/anomaly/score"
    assert rec.label == ("flagged" if reply["current_flagged"] else "normal")
    table = anomaly_features(bars_from_payload(OHLCVPayload.model_validate(sp500), min_rows=2),
                             reply["features_used"], window=20)
    assert rec.features == pytest.approx(dict(zip(reply["features_used"], table.values[-1].tolist(), strict=True)))


def test_cluster_and_supervised_predict_log_the_last_row(served: TestClient) -> None:
    rng = np.random.default_rng(0)
    data = {"columns": ["a", "b"], "values": rng.normal(size=(60, 2)).tolist()}
    cluster_id = served.post("/v1/cluster/fit", json={"data": data, "n_clusters": 3}).json()["model_id"]
    labels = served.post("/v1/cluster/predict", json={"model_id": cluster_id, "data": data}).json()["labels"]
    rec = _one(served, cluster_id)
    assert rec.output == labels[-1] and rec.label == str(labels[-1])
    assert rec.features == pytest.approx(dict(zip(["a", "b"], data["values"][-1], strict=True)))
    features, y = separable_data(100)
    fit = served.post("/v1/supervised/fit", json={"features": features, "target": y, "task": "classification",
                                                  "n_estimators": 15, "name": "clf"}).json()
    rows = {"columns": ["x0", "x1"], "values": [[0.1, -0.2], [2.0, 1.5]]}
    pred = served.post("/v1/supervised/predict", json={"model_id": fit["model_id"], "features": rows,
                                                       "include_probabilities": True}).json()
    rec = _one(served, fit["model_id"])
    assert rec.label == pred["predictions"][-1] and rec.features == {"x0": 2.0, "x1": 1.5}
    assert rec.output == pytest.approx(pred["probabilities"][-1][1])  # P(class 1), "up"
    served.post("/v1/supervised/predict", json={"model_id": fit["model_id"], "features": rows})
    newest, _ = _log(served).recent(fit["model_id"], 2)
    assert newest.output == pytest.approx(rec.output)  # computed on the writer thread when not asked for


def test_ensemble_predict_logs_the_primary_and_each_shadow_version(served: TestClient) -> None:
    registry: ModelRegistry = served.app.state.registry  # type: ignore[attr-defined]
    full, shadow = _seed_ensemble(registry, "ensemble-LOG", 1), _seed_ensemble(registry, "ensemble-LOG", 7)
    for model_id, stage in ((full, "full"), (shadow, "shadow")):
        assert served.post("/v1/ensemble/deployments", json={"model_id": model_id, "stage": stage}).status_code == 200
    values = np.random.default_rng(0).normal(size=(8, len(FEATURE_NAMES))).round(4).tolist()
    body = {"features": {"columns": list(FEATURE_NAMES), "values": values}, "symbol": "LOG", "include_rl": False}
    reply = served.post("/v1/ensemble/predict", json=body)
    assert reply.status_code == 200, reply.text
    primary, watched = _one(served, full), _one(served, shadow)
    assert (primary.shadow, watched.shadow) == (False, True)
    assert primary.output == pytest.approx(reply.json()["probabilities"]["up"])
    assert primary.label == reply.json()["signal"] and primary.subject == watched.subject == "LOG"
    assert primary.features == pytest.approx(dict(zip(FEATURE_NAMES, values[-1], strict=True)))


def test_execution_plan_logs_the_signed_size_and_its_inputs(served: TestClient) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(EXECUTION_INPUTS)))
    x[:, 0] = rng.choice([-1.0, 1.0], 200)
    net = ExecutionModel(ExecutionConfig(hidden=(8,)), train=ExecTrainConfig(epochs=2)).fit(
        x, rng.uniform(0, 1, 200), (x[:, 5] > 0).astype(np.int64))
    registry: ModelRegistry = served.app.state.registry  # type: ignore[attr-defined]
    model_id = adapter.store(registry, net, name="execution-LOG", metadata={"symbol": "LOG"}).model_id
    market = {"ret_1": 0.01, "ret_5": 0.02, "vol_10": 0.01, "vol_ratio": 1.0, "range": 0.02, "volume_z": 0.0}
    body = {"signals": [{"signal": "up", "confidence": 0.7}], "market": [market], "model_id": model_id,
            "symbol": "LOG"}
    reply = served.post("/v1/execution/plan", json=body)
    assert reply.status_code == 200, reply.text
    rec = _one(served, model_id)
    assert rec.output == pytest.approx(reply.json()["plans"][-1]["target_fraction"])
    assert rec.subject == "LOG" and rec.features["signal"] == 1.0 and rec.features["confidence"] == 0.7
    assert rec.features["ret_5"] == 0.02 and set(rec.features) == set(EXECUTION_INPUTS)


def test_rl_act_logs_each_policys_position(served: TestClient) -> None:
    bars = to_payload_dict(generate_regime_market(500, seed=5).bars)
    job = served.post("/v1/rl/train", json={"data": bars, **RL_FAST}).json()
    done = wait_job(served, job["job_id"], 120.0)
    assert done.status == "succeeded", done.error
    reply = served.post("/v1/rl/act", json={"data": bars, "agents": ["aggressive"]}).json()
    [action] = reply["actions"]
    rec = _one(served, action["model_id"])
    assert rec.output == pytest.approx(action["target_position"]) and rec.label == action["action_label"]
    assert rec.route == "/v1/rl/act" and rec.features and rec.request_hash == reply["data_hash"]


def test_outcomes_are_idempotent_and_a_changed_value_is_a_409_naming_the_field(served: TestClient) -> None:
    batch = {"outcomes": [{"outcome_id": "d1:SPY", "subject": "SPY", "as_of": "2024-03-01",
                           "realised_return": 0.01, "position": 0.5}]}
    assert served.post("/v1/monitor/outcomes", json=batch).json() == {"inserted": 1, "known": 0}
    assert served.post("/v1/monitor/outcomes", json=batch).json() == {"inserted": 0, "known": 1}
    changed = {"outcomes": [{**batch["outcomes"][0], "position": -0.5}]}
    resp = served.post("/v1/monitor/outcomes", json=changed)
    assert resp.status_code == 409 and "position" in resp.json()["error"]["message"]
    bad = served.post("/v1/monitor/outcomes", json={"outcomes": [{**batch["outcomes"][0], "realised_return": "x"}]})
    assert bad.status_code == 422 and "realised_return" in bad.text
    listed = served.get("/v1/monitor/outcomes", params={"subject": "SPY"}).json()["outcomes"]
    assert [o["outcome_id"] for o in listed] == ["d1:SPY"]


def test_model_quality_reads_settled_predictions_and_404s_an_unknown_id(served: TestClient) -> None:
    resp = served.get("/v1/monitor/models/no-such-model")
    assert resp.status_code == 404 and "no-such-model" in resp.json()["error"]["message"]
    registry: ModelRegistry = served.app.state.registry  # type: ignore[attr-defined]
    model_id = _seed_ensemble(registry, "ensemble-Q", 3)
    served.post("/v1/ensemble/deployments", json={"model_id": model_id, "stage": "full"})
    rng = np.random.default_rng(1)
    outcomes = []
    for day in range(1, 7):
        values = rng.normal(size=(8, len(FEATURE_NAMES))).round(4).tolist()
        stamps = [f"2024-01-{d:02d}" for d in range(day, day + 8)]  # each request ends one bar later
        body = {"features": {"columns": list(FEATURE_NAMES), "values": values, "timestamps": stamps},
                "symbol": "Q", "include_rl": False}
        assert served.post("/v1/ensemble/predict", json=body).status_code == 200
        outcomes.append({"outcome_id": f"q{day}", "subject": "Q", "as_of": stamps[-1],
                         "realised_return": float(rng.normal(0, 0.01))})
    served.post("/v1/monitor/outcomes", json={"outcomes": outcomes})
    _log(served)
    report = served.get(f"/v1/monitor/models/{model_id}").json()
    assert (report["predictions"], report["settled"], report["family"]) == (6, 6, "ensemble")
    [long, _] = report["windows"]
    assert long["size"] == 250 and long["n"] == 6
    brier = {m["metric"]: m for m in long["metrics"]}["brier"]
    assert brier["n"] == 6 and brier["judged"] is False and 0.0 <= brier["value"] <= 1.0  # 6 < min_samples
    metrics = served.get("/metrics").text
    assert f'quantcrew_model_quality_samples{{family="ensemble",metric="brier",model_id="{model_id}"' in metrics
    assert "quantcrew_predictions_logged_total" in metrics
    # one more prediction and its outcome, asked for at once (no flush by the test): the answer counts them
    values = rng.normal(size=(8, len(FEATURE_NAMES))).round(4).tolist()
    stamps = [f"2024-01-{d:02d}" for d in range(7, 15)]
    body = {"features": {"columns": list(FEATURE_NAMES), "values": values, "timestamps": stamps}, "symbol": "Q",
            "include_rl": False}
    assert served.post("/v1/ensemble/predict", json=body).status_code == 200
    served.post("/v1/monitor/outcomes", json={"outcomes": [{"outcome_id": "q7", "subject": "Q", "as_of": stamps[-1],
                                                            "realised_return": 0.01}]})
    fresh = served.get(f"/v1/monitor/models/{model_id}").json()
    assert (fresh["predictions"], fresh["settled"]) == (7, 7)


def test_the_log_switched_off_records_nothing(settings: Settings, sp500: dict[str, Any]) -> None:
    settings.monitor.prediction_log = False
    with TestClient(create_app(settings)) as client:
        fit = {"data": sp500, "name": "off", "n_estimators": 50}
        model_id = client.post("/v1/anomaly/fit", json=fit).json()["model_id"]
        assert client.post("/v1/anomaly/score", json={"data": sp500, "model_id": model_id}).status_code == 200
        assert not client.app.state.predictions.enabled  # type: ignore[attr-defined]
        assert _log(client).recent(model_id, 10) == []
