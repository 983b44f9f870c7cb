"""Regime routes over HTTP (TestClient): label, fit -> predict, provenance, bad input."""

from __future__ import annotations

import copy
from typing import Any

from fastapi.testclient import TestClient

from quantcrew.ml_server.schemas.regime import RegimeFitResponse, RegimeLabelResponse


def test_label_returns_filtered_labels_with_provenance(client: TestClient, sp500_payload: dict[str, Any]) -> None:
    resp = client.post("/v1/regime/label", json={"data": sp500_payload, "seed": 3})
    assert resp.status_code == 200, resp.text
    body = RegimeLabelResponse.model_validate(resp.json())
    assert len(body.labels) == len(sp500_payload["timestamps"]) - 1
    assert body.timestamps[-1] == sp500_payload["timestamps"][-1]
    assert body.model_id is None and body.model_version is None
    assert body.method_used in {"gaussian_hmm", "threshold_rules"}
    assert body.fallback is (body.method_used == "threshold_rules")
    assert body.data_hash.startswith("sha256:")
    assert body.seed == 3
    assert body.as_of is not None and body.as_of.date().isoformat() == sp500_payload["timestamps"][-1]
    for row in body.state_probabilities:
        assert abs(sum(row) - 1.0) < 1e-6
    for row in body.transition_matrix:
        assert abs(sum(row) - 1.0) < 1e-6


def test_same_input_gives_same_hash_and_labels(client: TestClient, sp500_payload: dict[str, Any]) -> None:
    a = client.post("/v1/regime/label", json={"data": sp500_payload}).json()
    b = client.post("/v1/regime/label", json={"data": sp500_payload}).json()
    assert a["data_hash"] == b["data_hash"]
    assert a["labels"] == b["labels"]


def test_fit_then_predict_uses_stored_model(client: TestClient, sp500_payload: dict[str, Any]) -> None:
    fit = client.post("/v1/regime/fit", json={"data": sp500_payload, "name": "spx", "n_states": 3})
    assert fit.status_code == 200, fit.text
    fitted = RegimeFitResponse.model_validate(fit.json())
    assert fitted.model_id == fitted.model.model_id and fitted.model_version == 1
    assert fitted.n_states == 3
    pred = client.post("/v1/regime/predict", json={"model_id": fitted.model_id, "data": sp500_payload})
    assert pred.status_code == 200, pred.text
    predicted = RegimeLabelResponse.model_validate(pred.json())
    assert predicted.model_id == fitted.model_id
    assert predicted.labels == fitted.labels  # same model, same bars, same filter
    info = client.get(f"/v1/models/{fitted.model_id}").json()
    assert info["sha256"] == fitted.model.sha256
    again = client.post("/v1/regime/fit", json={"data": sp500_payload, "name": "spx", "n_states": 3}).json()
    assert again["model_version"] == 2


def test_predict_has_no_look_ahead(client: TestClient, sp500_payload: dict[str, Any]) -> None:
    model_id = client.post("/v1/regime/fit", json={"data": sp500_payload}).json()["model_id"]
    short = {k: v[:200] for k, v in sp500_payload.items()}
    full = client.post("/v1/regime/predict", json={"model_id": model_id, "data": sp500_payload}).json()
    part = client.post("/v1/regime/predict", json={"model_id": model_id, "data": short}).json()
    assert part["labels"] == full["labels"][: len(part["labels"])]
    assert part["state_probabilities"] == full["state_probabilities"][: len(part["labels"])]


def test_predict_unknown_model_returns_404(client: TestClient, sp500_payload: dict[str, Any]) -> None:
    resp = client.post("/v1/regime/predict", json={"model_id": "regime-doesnotexist", "data": sp500_payload})
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"
    assert client.get("/v1/models/regime-doesnotexist").status_code == 404


def test_predict_tampered_artifact_returns_409(client: TestClient, sp500_payload: dict[str, Any]) -> None:
    model_id = client.post("/v1/regime/fit", json={"data": sp500_payload}).json()["model_id"]
    registry = client.app.state.registry  # type: ignore[attr-defined]
    path = next(registry.artifacts_dir.glob(f"{model_id}*"))
    path.write_bytes(path.read_bytes() + b"tampered")
    resp = client.post("/v1/regime/predict", json={"model_id": model_id, "data": sp500_payload})
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "artifact_integrity"
    assert "SHA-256" in resp.json()["error"]["message"]


def test_too_few_rows_returns_422(client: TestClient, sp500_payload: dict[str, Any]) -> None:
    short = {k: v[:10] for k, v in sp500_payload.items()}
    resp = client.post("/v1/regime/label", json={"data": short})
    assert resp.status_code == 422
    assert "data" in resp.json()["error"]["message"]


def test_bad_state_range_returns_422(client: TestClient, sp500_payload: dict[str, Any]) -> None:
    resp = client.post("/v1/regime/label", json={"data": sp500_payload, "min_states": 4, "max_states": 2})
    assert resp.status_code == 422
    assert "min_states" in resp.json()["error"]["message"]
    resp = client.post("/v1/regime/label", json={"data": sp500_payload, "n_states": 9})
    assert resp.status_code == 422
    assert "n_states" in resp.json()["error"]["message"]


def test_constant_prices_never_500(client: TestClient, sp500_payload: dict[str, Any]) -> None:
    flat = copy.deepcopy(sp500_payload)
    n = len(flat["timestamps"])
    for col in ("open", "high", "low", "close"):
        flat[col] = [100.0] * n
    resp = client.post("/v1/regime/label", json={"data": flat})
    assert resp.status_code in {200, 422}, resp.text
    if resp.status_code == 200:
        assert resp.json()["fallback"] is True


def test_fallback_is_flagged_never_dressed_up(client: TestClient, sp500_payload: dict[str, Any],
                                              monkeypatch: Any) -> None:
    from hmmlearn.hmm import GaussianHMM

    def broken_fit(self: Any, *a: Any, **k: Any) -> Any:
        raise ValueError("covars must be symmetric, positive-definite")

    monkeypatch.setattr(GaussianHMM, "fit", broken_fit)
    body = client.post("/v1/regime/label", json={"data": sp500_payload}).json()
    assert body["fallback"] is True
    assert body["method_used"] == "threshold_rules"
    assert "positive-definite" in body["fallback_reason"]
    metrics = client.get("/metrics").text
    assert 'quantcrew_model_fits_total{fallback="true",family="regime",method="threshold_rules"}' in metrics


def test_probabilities_can_be_left_out_without_changing_labels(client: TestClient,
                                                               sp500_payload: dict[str, Any]) -> None:
    full = client.post("/v1/regime/label", json={"data": sp500_payload}).json()
    slim = client.post("/v1/regime/label", json={"data": sp500_payload, "include_probabilities": False})
    assert slim.status_code == 200
    body = slim.json()
    assert body["state_probabilities"] is None and body["label_probabilities"] is None
    assert body["labels"] == full["labels"]
    assert body["current_probability"] == full["current_probability"]
    assert len(slim.content) < len(client.post("/v1/regime/label", json={"data": sp500_payload}).content) / 2
