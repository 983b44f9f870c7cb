"""Drift routes over HTTP: a regime model's drift on bars of its own regime and of a stormier one (with the bars'
quality and the Prometheus gauges), drift of its recent traffic from the prediction log, and the errors: unknown
model 404, no reference 409, a family that does not read bars 422, a bad window 422."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from quantcrew.ml_server.schemas.drift import DriftReport
from tests.ml_server.services.monitor.test_drift import CALM, STORMY, one_regime


def _fit(client: TestClient, payload: dict[str, Any]) -> str:
    resp = client.post("/v1/regime/fit", json={"data": payload, "n_states": 2, "n_restarts": 1,
                                               "include_probabilities": False})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["model_id"])


@pytest.fixture
def calm_model(client: TestClient) -> str:
    return _fit(client, one_regime(CALM, 400, seed=1))


def test_bars_of_the_same_regime_are_not_drift_and_a_stormier_regime_is(client: TestClient,
                                                                        calm_model: str) -> None:
    same = client.post("/v1/monitor/drift", json={"model_id": calm_model,
                                                  "data": one_regime(CALM, 200, seed=8, start="2004-01-05")})
    assert same.status_code == 200, same.text
    calm = DriftReport.model_validate(same.json())
    assert calm.source == "bars" and calm.family == "regime" and calm.model_version == 1
    assert calm.judged and not calm.drifted and calm.n == 199
    assert [s.name for s in calm.features] == ["range"] and calm.output is not None
    assert calm.quality is not None and calm.quality.score == 1.0 and calm.quality.n_bars == 200

    storm = DriftReport.model_validate(client.post("/v1/monitor/drift", json={
        "model_id": calm_model, "data": one_regime(STORMY, 200, seed=8, start="2004-01-05"), "window": 120}).json())
    assert storm.drifted and "range" in storm.drifted_features and storm.n == 120
    assert storm.psi_max is not None and storm.psi_max > 1.0 and "PSI > 0.25" in storm.rule
    metrics = client.get("/metrics").text
    assert f'quantcrew_drift_psi_max{{model_id="{calm_model}"}}' in metrics
    assert f'quantcrew_drift_detected{{model_id="{calm_model}"}} 1.0' in metrics
    assert f'quantcrew_bar_quality_score{{model_id="{calm_model}"}} 1.0' in metrics


def test_bar_quality_comes_back_beside_the_drift(client: TestClient, calm_model: str) -> None:
    payload = one_regime(CALM, 200, seed=9, start="2004-01-05")
    for i in range(100, 106):
        payload["close"][i] = payload["close"][99]
        payload["open"][i] = payload["close"][99]
        payload["high"][i] = max(payload["high"][i], payload["close"][99])
        payload["low"][i] = min(payload["low"][i], payload["close"][99])
    body = DriftReport.model_validate(client.post("/v1/monitor/drift", json={"model_id": calm_model,
                                                                             "data": payload}).json())
    assert body.quality is not None and body.quality.stale.count == 5  # the 3rd to the 7th equal close
    assert body.quality.score == pytest.approx(195 / 200)


def test_recent_traffic_is_read_from_the_prediction_log(client: TestClient, calm_model: str) -> None:
    early = client.get(f"/v1/monitor/drift/{calm_model}")
    assert early.status_code == 200, early.text
    assert not DriftReport.model_validate(early.json()).judged  # no predictions yet
    bars = one_regime(STORMY, 140, seed=3, start="2006-01-02")
    for end in range(60, 140, 2):  # 40 predictions, each the last bar of a growing window
        window = {k: (v[:end] if isinstance(v, list) else v) for k, v in bars.items()}
        resp = client.post("/v1/regime/predict", json={"model_id": calm_model, "data": window,
                                                       "include_probabilities": False})
        assert resp.status_code == 200, resp.text
    client.app.state.predictions.flush()  # type: ignore[attr-defined]
    report = DriftReport.model_validate(client.get(f"/v1/monitor/drift/{calm_model}", params={"window": 40}).json())
    assert report.source == "traffic" and report.n == 40 and report.judged
    assert report.drifted and "range" in report.drifted_features


def test_unknown_model_is_404_on_both_routes(client: TestClient) -> None:
    assert client.get("/v1/monitor/drift/regime-000000000000").status_code == 404
    resp = client.post("/v1/monitor/drift", json={"model_id": "regime-000000000000",
                                                  "data": one_regime(CALM, 50, seed=1)})
    assert resp.status_code == 404


def test_a_model_without_reference_is_a_409_that_says_so(client: TestClient, calm_model: str) -> None:
    client.app.state.references.delete(calm_model)  # type: ignore[attr-defined]  # as a version trained before
    for resp in (client.get(f"/v1/monitor/drift/{calm_model}"),
                 client.post("/v1/monitor/drift", json={"model_id": calm_model, "data": one_regime(CALM, 50, 1)})):
        assert resp.status_code == 409, resp.text
        assert "no drift reference" in resp.text


def test_a_table_model_is_refused_on_the_bars_route_naming_model_id(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 2))
    fit = client.post("/v1/supervised/fit", json={"features": {"columns": ["a", "b"], "values": x.tolist()},
                                                  "target": x[:, 0].tolist(), "task": "regression",
                                                  "method": "random_forest", "n_estimators": 5})
    assert fit.status_code == 200, fit.text
    resp = client.post("/v1/monitor/drift", json={"model_id": fit.json()["model_id"],
                                                  "data": one_regime(CALM, 50, seed=1)})
    assert resp.status_code == 422 and "model_id" in resp.text and "feature table" in resp.text
    traffic = client.get(f"/v1/monitor/drift/{fit.json()['model_id']}")
    assert traffic.status_code == 200 and [s.name for s in DriftReport.model_validate(traffic.json()).features] == []


def test_a_bad_window_is_a_422_naming_it(client: TestClient, calm_model: str) -> None:
    resp = client.get(f"/v1/monitor/drift/{calm_model}", params={"window": 0})
    assert resp.status_code == 422 and "window" in resp.text
    resp = client.post("/v1/monitor/drift", json={"model_id": calm_model, "data": one_regime(CALM, 50, 1),
                                                  "window": -1})
    assert resp.status_code == 422 and "window" in resp.text
