"""Cluster routes over HTTP (TestClient): analyze, fit -> predict, provenance, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from quantcrew.ml_server.schemas.cluster import ClusterFitResponse, ClusterPredictResponse, ClusterResponse
from tests.support.replies import assert_finite, invalid_input


def _states(n_per: int = 40, seed: int = 0) -> tuple[dict[str, Any], np.ndarray]:
    """Three market states (vol, trend) as feature rows, dated, shuffled in time."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.10, 0.02], [0.35, -0.05], [0.20, 0.08]])
    truth = np.repeat(np.arange(3), n_per)
    rng.shuffle(truth)
    x = centres[truth] + rng.normal(0, 0.01, (truth.size, 2))
    stamps = [str(np.datetime64("2022-01-03") + i) for i in range(truth.size)]
    return {"columns": ["vol", "trend"], "values": x.tolist(), "timestamps": stamps}, truth




def test_analyze_returns_labels_with_provenance(client: TestClient) -> None:
    data, truth = _states()
    resp = client.post("/v1/cluster/analyze", json={"data": data, "seed": 4})
    assert resp.status_code == 200, resp.text
    assert_finite(resp.json())
    body = ClusterResponse.model_validate(resp.json())
    assert body.model_id is None and body.method_used == "kmeans" and body.seed == 4 and not body.fallback
    assert body.n_clusters == 3 and body.selection_metric == "silhouette"
    assert body.names == data["timestamps"] and body.current_label == body.labels[-1]
    assert body.as_of is not None and body.as_of.date().isoformat() == data["timestamps"][-1]
    pairs = set(zip(truth.tolist(), body.labels, strict=True))
    assert len(pairs) == 3  # each true state is one cluster


def test_analyze_every_method_and_mode_never_nan(client: TestClient) -> None:
    data, _ = _states()
    rng = np.random.default_rng(1)
    f = rng.normal(size=(100, 2))
    assets = {"columns": ["a", "b", "c", "d"],
              "values": np.column_stack([f[:, 0], f[:, 0] + 0.1 * rng.normal(size=100), f[:, 1],
                                         f[:, 1] + 0.1 * rng.normal(size=100)]).tolist()}
    for body in ({"data": data, "method": "gmm", "max_clusters": 4}, {"data": data, "method": "dbscan"},
                 {"data": assets, "mode": "assets"}, {"data": assets, "mode": "assets", "method": "dbscan"},
                 {"data": data, "method": "dbscan", "eps": 1e-9}):
        resp = client.post("/v1/cluster/analyze", json=body)
        assert resp.status_code == 200, resp.text
        assert_finite(resp.json())
    only_noise = resp.json()
    assert only_noise["n_clusters"] == 0 and only_noise["silhouette"] is None and only_noise["warnings"]


def test_fit_then_predict_gives_the_fit_labels(client: TestClient) -> None:
    data, _ = _states()
    for method in ("kmeans", "gmm", "dbscan"):
        fit = client.post("/v1/cluster/fit", json={"data": data, "method": method, "name": f"states-{method}",
                                                   "n_clusters": 3})
        assert fit.status_code == 200, fit.text
        fitted = ClusterFitResponse.model_validate(fit.json())
        assert fitted.model_id == fitted.model.model_id and fitted.model_version == 1
        pred = client.post("/v1/cluster/predict", json={"model_id": fitted.model_id, "data": data})
        assert pred.status_code == 200, pred.text
        assert_finite(pred.json())
        predicted = ClusterPredictResponse.model_validate(pred.json())
        assert predicted.labels == fitted.labels, method
        assert predicted.names == data["timestamps"] and predicted.model_id == fitted.model_id
        assert (predicted.probabilities is not None) == (method == "gmm")
    metrics = client.get("/metrics").text
    assert 'quantcrew_model_fits_total{fallback="false",family="cluster",method="gmm"}' in metrics


def test_predict_new_rows_uses_stored_scaler(client: TestClient) -> None:
    data, _ = _states()
    fitted = client.post("/v1/cluster/fit", json={"data": data, "n_clusters": 3}).json()
    centres = fitted["centers"]  # original units: predicting them must give their own labels
    pred = client.post("/v1/cluster/predict", json={"model_id": fitted["model_id"],
                                                    "data": {"columns": data["columns"], "values": centres}})
    assert pred.status_code == 200, pred.text
    assert pred.json()["labels"] == [0, 1, 2] and pred.json()["names"] == ["0", "1", "2"]


def test_fit_assets_mode_returns_422(client: TestClient) -> None:
    data, _ = _states()
    err = invalid_input(client.post("/v1/cluster/fit", json={"data": data, "mode": "assets"}))
    assert "cannot be stored" in err["message"]


def test_predict_unknown_or_foreign_model_returns_404(client: TestClient) -> None:
    data, _ = _states()
    resp = client.post("/v1/cluster/predict", json={"model_id": "cluster-doesnotexist", "data": data})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    other = client.post("/v1/decompose/fit", json={"data": data}).json()["model_id"]
    resp = client.post("/v1/cluster/predict", json={"model_id": other, "data": data})
    assert resp.status_code == 404 and "not a cluster model" in resp.json()["error"]["message"]


def test_bad_inputs_return_422_naming_the_problem(client: TestClient) -> None:
    data, _ = _states()
    assert "max_clusters" in invalid_input(client.post(
        "/v1/cluster/analyze", json={"data": data, "min_clusters": 5, "max_clusters": 3}))["message"]
    few = {"columns": data["columns"], "values": data["values"][:4]}
    assert "fewer rows" in invalid_input(client.post(
        "/v1/cluster/analyze", json={"data": few, "min_clusters": 4}))["message"]
    assert "must be below the number of points" in invalid_input(client.post(
        "/v1/cluster/analyze", json={"data": few, "n_clusters": 4}))["message"]
    flat = dict(data, values=[[row[0], 0.5] for row in data["values"]])
    assert "constant columns ['trend']" in invalid_input(
        client.post("/v1/cluster/analyze", json={"data": flat}))["message"]
    assert "at least 3 assets" in invalid_input(client.post(
        "/v1/cluster/analyze", json={"data": data, "mode": "assets"}))["message"]
    model_id = client.post("/v1/cluster/fit", json={"data": data}).json()["model_id"]
    swapped = {"columns": ["trend", "vol"], "values": data["values"][:3]}
    assert "another order" in invalid_input(client.post(
        "/v1/cluster/predict", json={"model_id": model_id, "data": swapped}))["message"]
    fit_short = {"columns": data["columns"], "values": data["values"][:20]}
    assert "at least 30" in invalid_input(client.post("/v1/cluster/fit", json={"data": fit_short}))["message"]
