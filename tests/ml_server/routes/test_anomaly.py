"""Anomaly routes over HTTP (TestClient): detect, fit -> score, provenance, bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quantcrew.ml_server.schemas.anomaly import AnomalyFitResponse, AnomalyResponse
from tests.ml_server.services.anomaly.test_service import SHOCKS, calm_market


def _strict_json(text: str) -> Any:
    """Parse a reply, failing on NaN / Infinity (standard JSON has neither)."""
    def refuse(const: str) -> Any:
        raise AssertionError(f"reply holds {const}")
    return json.loads(text, parse_constant=refuse)


def _no_nulls_in_numbers(body: AnomalyResponse) -> None:
    assert all(isinstance(s, float) for s in body.scores)


def test_detect_finds_shocks_with_dates_and_provenance(client: TestClient) -> None:
    payload = calm_market(shocks=SHOCKS)
    resp = client.post("/v1/anomaly/detect", json={"data": payload, "top_k": 5, "seed": 2})
    assert resp.status_code == 200, resp.text
    body = AnomalyResponse.model_validate(_strict_json(resp.text))
    _no_nulls_in_numbers(body)
    assert {payload["timestamps"][t] for t in SHOCKS} <= {p.timestamp for p in body.top}
    assert len(body.top) == 5
    assert body.model_id is None and body.model_version is None
    assert body.method_used == "isolation_forest" and body.fallback is False and body.seed == 2
    assert body.as_of is not None and body.as_of.date().isoformat() == payload["timestamps"][-1]
    assert body.timestamps[-1] == payload["timestamps"][-1]
    assert body.features_used == ["log_return", "abs_return", "range", "volume_z", "gap"]
    metrics = client.get("/metrics").text
    assert 'quantcrew_model_fits_total{fallback="false",family="anomaly",method="isolation_forest"}' in metrics


def test_fit_then_score_round_trip(client: TestClient) -> None:
    payload = calm_market(300, shocks=(120,))
    fit = client.post("/v1/anomaly/fit", json={"data": payload, "name": "spy-anomaly", "contamination": 0.02,
                                                   "n_estimators": 50})
    assert fit.status_code == 200, fit.text
    fitted = AnomalyFitResponse.model_validate(_strict_json(fit.text))
    assert fitted.model_id == fitted.model.model_id and fitted.model_version == 1
    assert fitted.model.family == "anomaly" and fitted.model.metadata["threshold_"] == fitted.threshold
    score = client.post("/v1/anomaly/score", json={"model_id": fitted.model_id, "data": payload})
    assert score.status_code == 200, score.text
    scored = AnomalyResponse.model_validate(_strict_json(score.text))
    assert scored.model_id == fitted.model_id and scored.model_version == 1
    assert scored.scores == fitted.scores and scored.flags == fitted.flags
    assert scored.threshold == fitted.threshold and scored.top == fitted.top
    assert scored.current_percentile == fitted.current_percentile
    # new bars: same stored threshold, no refit
    newer = client.post("/v1/anomaly/score", json={"model_id": fitted.model_id, "data": calm_market(80, seed=9),
                                                   "top_k": 3}).json()
    assert newer["threshold"] == fitted.threshold and len(newer["top"]) == 3
    again = client.post("/v1/anomaly/fit", json={"data": payload, "name": "spy-anomaly", "n_estimators": 20}).json()
    assert again["model_version"] == 2


def test_score_unknown_model_returns_404(client: TestClient) -> None:
    resp = client.post("/v1/anomaly/score", json={"model_id": "anomaly-doesnotexist", "data": calm_market(60)})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"


def test_score_with_a_model_of_another_family_returns_404(client: TestClient) -> None:
    registry = client.app.state.registry  # type: ignore[attr-defined]
    other = registry.save(family="regime", name="r", method="threshold_rules", obj={"x": 1}, fmt="json")
    resp = client.post("/v1/anomaly/score", json={"model_id": other.model_id, "data": calm_market(60)})
    assert resp.status_code == 404
    assert "not a anomaly model" in resp.json()["error"]["message"]


def test_volume_z_without_volume_returns_422_naming_data_volume(client: TestClient) -> None:
    resp = client.post("/v1/anomaly/detect", json={"data": calm_market(100, volume=False), "features": ["volume_z"]})
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "invalid_input" and "data.volume" in err["message"]
    assert err["details"][0]["loc"] == ["body", "data", "volume"]


def test_score_without_volume_on_a_volume_model_returns_422(client: TestClient) -> None:
    model_id = client.post("/v1/anomaly/fit", json={"data": calm_market(100), "n_estimators": 20}).json()["model_id"]
    resp = client.post("/v1/anomaly/score", json={"model_id": model_id, "data": calm_market(100, volume=False)})
    assert resp.status_code == 422
    assert "data.volume" in resp.json()["error"]["message"]


@pytest.mark.parametrize("contamination", [0.0, -0.1, 0.51])
def test_contamination_out_of_range_returns_422(client: TestClient, contamination: float) -> None:
    resp = client.post("/v1/anomaly/detect", json={"data": calm_market(100), "contamination": contamination})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_input"
    assert "contamination" in resp.json()["error"]["message"]


def test_too_few_bars_returns_422(client: TestClient) -> None:
    resp = client.post("/v1/anomaly/detect", json={"data": calm_market(40)})
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "invalid_input" and "40 bars" in err["message"] and "50" in err["message"]


def test_bad_fields_return_422_naming_them(client: TestClient) -> None:
    payload = calm_market(100)
    for extra, field in (({"features": ["range", "range"]}, "features"), ({"top_k": 500}, "top_k"),
                         ({"n_estimators": 3}, "n_estimators"), ({"name": "bad name!"}, "name")):
        resp = client.post("/v1/anomaly/fit", json={"data": payload, **extra})
        assert resp.status_code == 422, extra
        assert field in resp.json()["error"]["message"] or field in json.dumps(resp.json()["error"]["details"])


def test_nan_in_bars_returns_422_not_500(client: TestClient) -> None:
    payload = calm_market(100)
    body = json.dumps({"data": payload}).replace(str(payload["close"][5]), "NaN", 1)
    resp = client.post("/v1/anomaly/detect", content=body, headers={"content-type": "application/json"})
    assert resp.status_code == 422
    assert "close" in resp.json()["error"]["message"]
