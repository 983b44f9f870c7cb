"""Explain routes over HTTP: real tiny fits of each explainable family explained through the real app, answers
that agree with the families' own predictions, SHAP in the same shape, and every bad input a clear 4xx."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import load_settings
from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.schemas.explain import ExplainGlobalResponse, ExplainLocalResponse
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES
from quantcrew.ml_server.services.explain import service
from tests.support.jobs import train_policy, wait_job
from tests.support.replies import assert_finite, invalid_input

COLUMNS = ["signal", "noise_1", "noise_2", "noise_3"]


@dataclass(frozen=True)
class _Served:
    client: TestClient
    features: dict[str, Any]
    regression_id: str
    classifier_id: str
    bars: dict[str, Any]
    ensemble_id: str
    policy_id: str
    cluster_id: str


def _fit(client: TestClient, body: dict[str, Any]) -> str:
    resp = client.post("/v1/supervised/fit", json=body)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["model"]["model_id"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Served]:
    """One app and a tiny model of each explainable family (and a cluster model, which cannot be explained)."""
    settings = load_settings(home=tmp_path_factory.mktemp("explain-home"))
    with TestClient(create_app(settings)) as client:
        yield fit_served(client)


def fit_served(client: TestClient) -> _Served:
    """A tiny model of each explainable family and a cluster model, fitted through ``client`` (any server's)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 4))
    features = {"columns": COLUMNS, "values": x.round(6).tolist()}
    bars = to_payload_dict(generate_regime_market(420, seed=5).bars)
    regression_id = _fit(client, {"features": features, "target": (3.0 * x[:, 0]).tolist(),
                                  "task": "regression", "n_estimators": 30, "max_depth": 5, "name": "reg"})
    classifier_id = _fit(client, {"features": features, "target": np.where(x[:, 0] > 0, "up", "down").tolist(),
                                  "task": "classification", "n_estimators": 30, "max_depth": 4, "name": "cls"})
    job = client.post("/v1/ensemble/train", json={
        "data": bars, "symbol": "SYN", "members": 1, "window": 5, "hidden": 4, "heads": 1, "epochs": 1,
        "folds": 2, "batch_size": 128, "mc_samples": 2})
    assert job.status_code == 202, job.text
    done = wait_job(client, job.json()["job_id"], 120.0)
    assert done.status == "succeeded", done.error
    assert done.result is not None
    ensemble_id = done.result["model"]["model_id"]
    deployed = client.post("/v1/ensemble/deployments", json={"model_id": ensemble_id, "stage": "full"})
    assert deployed.status_code == 200, deployed.text
    policy_id = train_policy(client, bars)
    cluster = client.post("/v1/cluster/fit", json={"data": features, "n_clusters": 2})
    assert cluster.status_code == 200, cluster.text
    return _Served(client, features, regression_id, classifier_id, bars, ensemble_id, policy_id,
                   cluster.json()["model_id"])


def _global(served: _Served, body: dict[str, Any]) -> ExplainGlobalResponse:
    resp = served.client.post("/v1/explain/global", json=body)
    assert resp.status_code == 200, resp.text
    assert_finite(resp.json())
    return ExplainGlobalResponse.model_validate(resp.json())


def _local(served: _Served, body: dict[str, Any]) -> ExplainLocalResponse:
    resp = served.client.post("/v1/explain/local", json=body)
    assert resp.status_code == 200, resp.text
    assert_finite(resp.json())
    return ExplainLocalResponse.model_validate(resp.json())


def test_a_supervised_model_that_reads_one_feature_ranks_it_first_with_a_faithful_surrogate(served: _Served) -> None:
    reply = _global(served, {"model_id": served.regression_id, "features": served.features, "rows": 200,
                             "repeats": 3, "seed": 4})
    assert reply.features[0].name == "signal"
    assert reply.features[0].importance > 10 * max(f.importance for f in reply.features[1:])
    assert reply.family == "supervised" and reply.output == "prediction" and reply.rows == 200
    assert reply.surrogate.fidelity_metric == "r2" and reply.surrogate.fidelity > 0.9
    assert all(c.startswith("signal ") for r in reply.surrogate.rules for c in r.conditions)
    assert reply.model_id == served.regression_id and reply.model_version == 1
    assert reply.method_used == "perturbation" and not reply.fallback and reply.seed == 4
    assert reply.data_hash.startswith("sha256:") and reply.repeats == 3 and reply.first_row == "40"
    again = _global(served, {"model_id": served.regression_id, "features": served.features, "rows": 200,
                             "repeats": 3, "seed": 4})
    assert again.features == reply.features  # seeded


def test_a_local_explanation_of_a_supervised_row_agrees_with_its_prediction(served: _Served) -> None:
    reply = _local(served, {"model_id": served.regression_id, "features": served.features, "row": 37,
                            "reference_rows": 100})
    predicted = served.client.post("/v1/supervised/predict", json={
        "model_id": served.regression_id,
        "features": {"columns": COLUMNS, "values": [served.features["values"][37]]}}).json()["predictions"][0]
    assert reply.prediction == pytest.approx(predicted)
    assert reply.row == "37" and reply.features[0].name == "signal" and reply.label is None
    assert reply.features[0].value == served.features["values"][37][0]
    assert reply.features[0].delta_plus is not None and reply.features[0].delta_plus > 0


def test_a_classifier_explains_the_probability_of_a_class_and_its_surrogate_the_predicted_class(
        served: _Served) -> None:
    reply = _global(served, {"model_id": served.classifier_id, "features": served.features,
                             "surrogate_target": "class", "target_class": "down"})
    assert reply.output == "P(down)" and reply.features[0].name == "signal"
    assert reply.surrogate.kind == "classification" and reply.surrogate.fidelity_metric == "agreement"
    assert reply.surrogate.fidelity > 0.9 >= reply.surrogate.baseline
    local = _local(served, {"model_id": served.classifier_id, "features": served.features})
    assert local.output == "P(up)" and local.label in ("down", "up")
    assert (local.prediction > 0.5) == (local.label == "up")


def test_the_ensemble_is_explained_over_its_16_features_and_agrees_with_its_own_prediction(served: _Served) -> None:
    local = _local(served, {"symbol": "SYN", "data": served.bars})  # the version deployed for the symbol
    predicted = served.client.post("/v1/ensemble/predict", json={"model_id": served.ensemble_id,
                                                                 "data": served.bars}).json()
    assert local.model_id == served.ensemble_id and local.family == "ensemble"
    assert local.prediction == pytest.approx(predicted["probabilities"]["up"] - predicted["probabilities"]["down"],
                                             abs=1e-6)
    assert local.label == predicted["signal"] and predicted["as_of"].startswith(local.row)
    assert sorted(e.name for e in local.features) == sorted(FEATURE_NAMES)
    reply = _global(served, {"model_id": served.ensemble_id, "family": "ensemble", "data": served.bars,
                             "rows": 100, "repeats": 2, "surrogate_target": "class"})
    assert sorted(f.name for f in reply.features) == sorted(FEATURE_NAMES)
    assert reply.output == "p_up - p_down" and reply.surrogate.kind == "classification"
    assert all(f.importance >= 0.0 for f in reply.features)
    assert reply.as_of is not None and reply.as_of.isoformat().startswith(served.bars["timestamps"][-1][:10])


def test_an_rl_policy_is_explained_through_its_action_probabilities(served: _Served) -> None:
    local = _local(served, {"model_id": served.policy_id, "data": served.bars, "mode": "shift"})
    acted = served.client.post("/v1/rl/act", json={"data": served.bars, "model_ids": [served.policy_id]}).json()
    probs = acted["actions"][0]["probabilities"]
    assert local.family == "rl" and local.output == "P(long) - P(short)"
    assert local.prediction == pytest.approx(probs["long"] - probs["short"], abs=1e-6)
    assert local.label == acted["actions"][0]["action_label"]
    reply = _global(served, {"model_id": served.policy_id, "data": served.bars, "rows": 100})
    names = served.client.get(f"/v1/models/{served.policy_id}").json()["metadata"]["feature_names"]
    assert sorted(f.name for f in reply.features) == sorted(names)


def test_shap_answers_in_the_same_shape(served: _Served) -> None:
    pytest.importorskip("shap")
    body = {"model_id": served.regression_id, "features": served.features, "method": "shap", "shap_rows": 10}
    reply = _global(served, body)
    assert reply.method_used == "shap" and reply.repeats is None and reply.features[0].name == "signal"
    assert reply.surrogate.fidelity > 0.9
    local = _local(served, {"model_id": served.regression_id, "features": served.features, "method": "shap"})
    assert local.mode == "shap" and local.base_value is not None and local.features[0].delta_plus is None
    assert sum(f.effect for f in local.features) + local.base_value == pytest.approx(local.prediction, abs=1e-6)


def test_shap_without_the_package_is_a_422_naming_method(served: _Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "shap", None)
    for path in ("/v1/explain/global", "/v1/explain/local"):
        err = invalid_input(served.client.post(path, json={"model_id": served.regression_id, "method": "shap",
                                                           "features": served.features}))
        assert err["details"][0]["loc"] == ["body", "method"] and "explain" in err["message"]


def test_work_over_the_cap_is_refused_naming_repeats(served: _Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "MAX_EVALS", 1000)
    err = invalid_input(served.client.post("/v1/explain/global", json={
        "model_id": served.regression_id, "features": served.features, "repeats": 5}))
    assert err["details"][0]["loc"] == ["body", "repeats"] and "cap of 1000" in err["message"]


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"model_id": "@cluster"}, "model_id", "cluster model"),
    ({"family": "rl"}, "family", "not rl"),
    ({"features": None}, "features", "send features"),
    ({"features": "@short"}, "features", "at least 20"),
    ({"target_class": "sideways"}, "target_class", "not a class"),
    ({"model_id": "@policy", "features": None}, "data", "send data"),
    ({"model_id": "@ensemble", "data": "@bars", "row": 3}, "row", "no full input"),
    ({"model_id": "@ensemble", "data": "@bars", "row": 999}, "row", "outside"),
])
def test_bad_input_is_a_422_naming_the_field(served: _Served, change: dict[str, Any], field: str,
                                             words: str) -> None:
    refs = {"@cluster": served.cluster_id, "@policy": served.policy_id, "@ensemble": served.ensemble_id,
            "@bars": served.bars, "@short": {"columns": COLUMNS, "values": served.features["values"][:10]}}
    body = {"model_id": served.classifier_id, "features": served.features}
    body.update({k: refs.get(v, v) if isinstance(v, str) else v for k, v in change.items()})
    path = "/v1/explain/local" if "row" in change else "/v1/explain/global"
    err = invalid_input(served.client.post(path, json={k: v for k, v in body.items() if v is not None}))
    assert err["details"][0]["loc"] == ["body", field], err
    assert words in err["message"]


def test_unknown_models_and_symbols_without_a_deployed_ensemble_are_404(served: _Served) -> None:
    resp = served.client.post("/v1/explain/global", json={"model_id": "no-such-model", "features": served.features})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    resp = served.client.post("/v1/explain/local", json={"symbol": "NOPE", "data": served.bars})
    assert resp.status_code == 404, resp.text
    resp = served.client.post("/v1/explain/local", json={"data": served.bars})
    assert resp.status_code == 422 and "model_id" in resp.text
