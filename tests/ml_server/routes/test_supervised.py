"""Supervised routes over HTTP (TestClient): analyze, fit -> predict, provenance, bad input."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from quantcrew.ml_server.schemas.supervised import (
    SupervisedAnalyzeRequest,
    SupervisedFitResponse,
    SupervisedPredictResponse,
)
from quantcrew.ml_server.services.supervised.service import evaluate
from tests.ml_server.services.supervised.test_service import linear_data, separable_data
from tests.support.replies import invalid_input

SMALL = {"n_estimators": 15, "max_iter": 150}


def _strict_json(text: str) -> Any:
    """Parse a reply, failing on NaN / Infinity (standard JSON has neither)."""
    def refuse(const: str) -> Any:
        raise AssertionError(f"reply holds {const}")
    return json.loads(text, parse_constant=refuse)



def test_analyze_evaluates_and_predicts_without_storing(client: TestClient) -> None:
    features, y = linear_data(120)
    new = {"columns": ["x0", "x1"], "values": [[1.0, 0.0], [0.0, 1.0]]}
    resp = client.post("/v1/supervised/analyze", json={"features": features, "target": y, "task": "regression",
                                                       "predict_features": new, "seed": 4, **SMALL})
    assert resp.status_code == 200, resp.text
    body = SupervisedFitResponse.model_validate(_strict_json(resp.text))
    assert body.model is None and body.model_id is None and body.model_version is None
    assert body.metrics["r2"] > 0.9 and body.importance_method == "impurity"
    assert body.n_train == 96 and body.n_test == 24 and body.test_start == features["timestamps"][96]
    assert body.seed == 4 and body.method_used == "random_forest" and body.fallback is False
    assert body.as_of is not None and body.as_of.date().isoformat() == features["timestamps"][-1]
    assert body.predictions is not None and len(body.predictions) == 2
    assert client.app.state.registry.count() == 0  # type: ignore[attr-defined]
    metrics = client.get("/metrics").text
    assert 'quantcrew_model_fits_total{fallback="false",family="supervised",method="random_forest"}' in metrics


@pytest.mark.parametrize("method", ["random_forest", "gradient_boosting", "mlp"])
@pytest.mark.parametrize("task", ["regression", "classification"])
def test_fit_then_predict_equals_in_memory_predictions(client: TestClient, method: str, task: str) -> None:
    features, y = linear_data(100) if task == "regression" else separable_data(100)
    request = {"features": features, "target": y, "task": task, "method": method, **SMALL}
    fit = client.post("/v1/supervised/fit", json={**request, "name": f"{task}-{method}"})
    assert fit.status_code == 200, fit.text
    fitted = SupervisedFitResponse.model_validate(_strict_json(fit.text))
    assert fitted.model is not None and fitted.model_id == fitted.model.model_id and fitted.model_version == 1
    assert fitted.model.family == "supervised" and fitted.model.metadata["feature_names"] == ["x0", "x1"]
    rows = {"columns": ["x0", "x1"], "values": np.random.default_rng(9).normal(size=(7, 2)).tolist()}
    pred = client.post("/v1/supervised/predict", json={"model_id": fitted.model_id, "features": rows,
                                                       "include_probabilities": True})
    assert pred.status_code == 200, pred.text
    body = SupervisedPredictResponse.model_validate(_strict_json(pred.text))
    model, in_memory = evaluate(SupervisedAnalyzeRequest.model_validate(request), min_rows=30)
    assert body.predictions == model.predict(np.asarray(rows["values"]))
    assert in_memory.metrics == fitted.metrics
    assert body.model_id == fitted.model_id and body.method_used == method
    if task == "classification":
        assert body.classes == ["down", "up"] and body.probabilities is not None
        np.testing.assert_allclose(np.sum(body.probabilities, axis=1), 1.0)
    else:
        assert body.classes is None and body.probabilities is None


def test_predict_with_other_columns_lists_missing_and_extra(client: TestClient) -> None:
    features, y = linear_data(60)
    model_id = client.post("/v1/supervised/fit", json={"features": features, "target": y, "task": "regression",
                                                       **SMALL}).json()["model_id"]
    err = invalid_input(client.post("/v1/supervised/predict", json={
        "model_id": model_id, "features": {"columns": ["x0", "vol"], "values": [[1.0, 2.0]]}}))
    assert "missing ['x1']" in err["message"] and "extra ['vol']" in err["message"]
    assert err["details"][0]["missing"] == ["x1"] and err["details"][0]["extra"] == ["vol"]
    err = invalid_input(client.post("/v1/supervised/predict", json={
        "model_id": model_id, "features": {"columns": ["x1", "x0"], "values": [[1.0, 2.0]]}}))
    assert "another order" in err["message"]
    err = invalid_input(client.post("/v1/supervised/predict", json={
        "model_id": model_id, "features": {"columns": ["x0", "x1"], "values": [[1.0, 1e308]]}}))
    assert "features.values.0.1" in err["message"]


def test_predict_unknown_model_returns_404(client: TestClient) -> None:
    resp = client.post("/v1/supervised/predict", json={
        "model_id": "supervised-doesnotexist", "features": {"columns": ["x0"], "values": [[1.0]]}})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"


def test_predict_with_a_model_of_another_family_returns_404(client: TestClient) -> None:
    registry = client.app.state.registry  # type: ignore[attr-defined]
    other = registry.save(family="anomaly", name="a", method="isolation_forest", obj={"x": 1}, fmt="json")
    resp = client.post("/v1/supervised/predict", json={
        "model_id": other.model_id, "features": {"columns": ["x0"], "values": [[1.0]]}})
    assert resp.status_code == 404
    assert "not a supervised model" in resp.json()["error"]["message"]


def test_bad_inputs_return_422_naming_the_problem(client: TestClient) -> None:
    features, y = linear_data(50)
    _, labels = separable_data(50)
    base = {"features": features, "task": "regression"}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**base, "target": y[:-3]}, "47 values but features has 50 rows"),
        ({**base, "task": "classification", "target": ["a"] * 45 + ["b"] * 5}, "at least 2 classes"),
        ({**base, "target": labels}, "task is 'regression'"),
        ({**base, "target": y, "test_fraction": 0.05}, "holdout of 2 rows"),
        ({"features": {"columns": ["x0"], "values": [[1.0]] * 20}, "target": [0.0] * 20, "task": "regression"},
         "at least 30 training rows"),
        ({**base, "target": y, "method": "mlp", "importance": "impurity"}, "impurity"),
        ({**base, "target": y, "test_fraction": 0.95}, "test_fraction"),
    ]
    for body, needle in cases:
        err = invalid_input(client.post("/v1/supervised/analyze", json=body))
        assert needle in err["message"], (needle, err["message"])


def test_nan_in_features_returns_422_not_500(client: TestClient) -> None:
    features, y = linear_data(50)
    raw = json.dumps({"features": features, "target": y, "task": "regression"})
    raw = raw.replace(repr(features["values"][3][1]), "NaN", 1)
    err = invalid_input(
        client.post("/v1/supervised/analyze", content=raw, headers={"content-type": "application/json"}))
    assert "features.values" in err["message"]


def test_fit_adds_versions_and_keeps_params(client: TestClient) -> None:
    features, y = separable_data(60)
    request = {"features": features, "target": y, "task": "classification", "name": "signs", **SMALL}
    first = client.post("/v1/supervised/fit", json=request).json()
    second = client.post("/v1/supervised/fit", json=request).json()
    assert (first["model_version"], second["model_version"]) == (1, 2)
    meta = second["model"]["metadata"]
    assert meta["params"]["n_estimators"] == 15 and meta["classes"] == ["down", "up"]
    assert meta["metrics"] == second["metrics"]
