"""Decompose routes over HTTP (TestClient): analyze, fit -> transform, provenance, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from quantcrew.ml_server.schemas.decompose import (
    DecomposeFitResponse,
    DecomposeResponse,
    DecomposeTransformResponse,
)
from tests.support.replies import assert_finite, invalid_input


def _payload(n: int = 120, seed: int = 0, dated: bool = True) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    market = rng.normal(0, 0.01, n)
    x = np.outer(market, [1.0, 0.8, 1.2, 0.9]) + rng.normal(0, 0.002, (n, 4))
    out: dict[str, Any] = {"columns": ["SPY", "QQQ", "IWM", "EFA"], "values": x.tolist()}
    if dated:
        out["timestamps"] = [str(np.datetime64("2021-01-04") + i) for i in range(n)]
    return out




def test_analyze_returns_components_with_provenance(client: TestClient) -> None:
    data = _payload()
    resp = client.post("/v1/decompose/analyze", json={"data": data, "include_scores": True,
                                                        "rolling_window": 60, "rolling_step": 20})
    assert resp.status_code == 200, resp.text
    assert_finite(resp.json())
    body = DecomposeResponse.model_validate(resp.json())
    assert body.model_id is None and body.model_version is None
    assert body.method_used == "pca" and body.fallback is False and body.seed is None
    assert body.data_hash.startswith("sha256:")
    assert body.as_of is not None and body.as_of.date().isoformat() == data["timestamps"][-1]
    assert body.n_components == 1 and body.explained_variance_ratio[0] > 0.75  # one market factor
    assert set(body.exposures) == set(data["columns"])
    assert body.scores is not None and len(body.scores) == 120
    assert body.rolling is not None and len(body.rolling) == (120 - 60) // 20 + 1
    assert body.rolling[-1].end == data["timestamps"][-1]


def test_analyze_each_method_never_nan(client: TestClient) -> None:
    for method in ("pca", "ica", "nmf"):
        resp = client.post("/v1/decompose/analyze",
                           json={"data": _payload(), "method": method, "nmf_shift": True, "n_components": 2})
        assert resp.status_code == 200, resp.text
        assert_finite(resp.json())
        assert resp.json()["component_names"][0] in {"pc1", "ic1", "nmf1"}


def test_fit_then_transform_uses_stored_model(client: TestClient) -> None:
    data = _payload()
    fit = client.post("/v1/decompose/fit", json={"data": data, "name": "etf-pca", "n_components": 2,
                                                  "standardize": True, "include_scores": True})
    assert fit.status_code == 200, fit.text
    fitted = DecomposeFitResponse.model_validate(fit.json())
    assert fitted.model_id == fitted.model.model_id and fitted.model_version == 1
    assert fitted.model.family == "decompose" and fitted.model.metadata["columns"] == data["columns"]
    out = client.post("/v1/decompose/transform", json={"model_id": fitted.model_id, "data": data})
    assert out.status_code == 200, out.text
    projected = DecomposeTransformResponse.model_validate(out.json())
    assert projected.columns == ["pc1", "pc2"] and projected.model_id == fitted.model_id
    assert projected.timestamps == data["timestamps"]
    assert fitted.scores is not None
    np.testing.assert_allclose(np.array(projected.scores), np.array(fitted.scores), atol=1e-10)
    again = client.post("/v1/decompose/fit", json={"data": data, "name": "etf-pca"}).json()
    assert again["model_version"] == 2
    assert 'quantcrew_model_fits_total{fallback="false",family="decompose",method="pca"}' in client.get("/metrics").text


def test_fit_then_transform_nmf_applies_stored_shift(client: TestClient) -> None:
    data = _payload()
    fitted = client.post("/v1/decompose/fit", json={"data": data, "method": "nmf", "nmf_shift": True}).json()
    assert fitted["shift_applied"] > 0
    out = client.post("/v1/decompose/transform", json={"model_id": fitted["model_id"], "data": data})
    assert out.status_code == 200, out.text
    assert out.json()["columns"] == ["nmf1", "nmf2", "nmf3"]
    assert np.min(out.json()["scores"]) >= 0.0
    lower = dict(data, values=[[v - 1.0 for v in row] for row in data["values"]])
    assert "below the fitted NMF shift" in invalid_input(client.post(
        "/v1/decompose/transform", json={"model_id": fitted["model_id"], "data": lower}))["message"]


def test_transform_with_other_columns_returns_422(client: TestClient) -> None:
    data = _payload()
    model_id = client.post("/v1/decompose/fit", json={"data": data}).json()["model_id"]
    other = dict(data, columns=["SPY", "QQQ", "IWM", "VGK"])
    err = invalid_input(client.post("/v1/decompose/transform", json={"model_id": model_id, "data": other}))
    assert "missing ['EFA']" in err["message"] and "extra ['VGK']" in err["message"]


def test_transform_unknown_or_foreign_model_returns_404(client: TestClient) -> None:
    data = _payload()
    resp = client.post("/v1/decompose/transform", json={"model_id": "decompose-doesnotexist", "data": data})
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "model_not_found"
    cluster_id = client.post("/v1/cluster/fit", json={"data": data, "n_clusters": 2}).json()["model_id"]
    resp = client.post("/v1/decompose/transform", json={"model_id": cluster_id, "data": data})
    assert resp.status_code == 404
    assert "not a decompose model" in resp.json()["error"]["message"]


def test_bad_inputs_return_422_naming_the_problem(client: TestClient) -> None:
    data = _payload()
    flat = dict(data, values=[[row[0], 0.01, row[2], row[3]] for row in data["values"]])
    assert "constant columns ['QQQ']" in invalid_input(
        client.post("/v1/decompose/analyze", json={"data": flat}))["message"]
    assert "n_components=5 exceeds" in invalid_input(
        client.post("/v1/decompose/analyze", json={"data": data, "n_components": 5}))["message"]
    nmf = invalid_input(client.post("/v1/decompose/analyze", json={"data": data, "method": "nmf"}))
    assert "negative values" in nmf["message"] and "nmf_shift=true" in nmf["message"]
    short = {"columns": data["columns"], "values": data["values"][:2]}
    assert "at least 3" in invalid_input(client.post("/v1/decompose/analyze", json={"data": short}))["message"]
    fit_short = {"columns": data["columns"], "values": data["values"][:20]}
    assert "at least 30" in invalid_input(client.post("/v1/decompose/fit", json={"data": fit_short}))["message"]
    assert "rolling_window" in invalid_input(
        client.post("/v1/decompose/analyze", json={"data": data, "rolling_window": 500}))["message"]
    assert "variance_target" in invalid_input(
        client.post("/v1/decompose/analyze", json={"data": data, "variance_target": 0}))["message"]
    assert "rolling_window" in invalid_input(
        client.post("/v1/decompose/analyze", json={"data": data, "rolling_window": 5}))["message"]


def test_fit_then_transform_ica_keeps_signs_and_order(client: TestClient) -> None:
    data = _payload()
    fitted = client.post("/v1/decompose/fit", json={"data": data, "method": "ica", "n_components": 2,
                                                     "include_scores": True, "seed": 9}).json()
    assert fitted["seed"] == 9 and fitted["component_names"] == ["ic1", "ic2"]
    out = client.post("/v1/decompose/transform", json={"model_id": fitted["model_id"], "data": data})
    assert out.status_code == 200, out.text
    np.testing.assert_allclose(np.array(out.json()["scores"]), np.array(fitted["scores"]), atol=1e-10)
