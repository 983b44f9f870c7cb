"""The app shell: probes, metrics, OpenAPI, auth, limits and the one error body."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings, load_settings
from quantcrew.ml_server.app import create_app


def _assert_error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return dict(body["error"])


def test_health_returns_ok_without_auth(client: TestClient) -> None:
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


def test_ready_reports_device_and_families(client: TestClient) -> None:
    body = client.get("/ready").json()
    assert body["ready"] is True
    assert body["device"] in {"cpu", "cuda"}
    assert "regime" in body["families"]


def test_ready_is_503_before_the_lifespan_ran(settings: Settings) -> None:
    app = create_app(settings)
    tc = TestClient(app)  # not entered: lifespan not run, registry absent
    app.state.registry = None
    resp = tc.get("/ready")
    _assert_error(resp, 503, "not_ready")


def test_metrics_exposes_request_counts(client: TestClient) -> None:
    client.get("/health")
    client.get("/v1/models/regime-abc")
    text = client.get("/metrics").text
    assert 'quantcrew_http_requests_total{method="GET",route="/health",status="200"} 1.0' in text
    assert 'quantcrew_http_requests_total{method="GET",route="/v1/models/{model_id}",status="404"} 1.0' in text


def test_openapi_lists_versioned_regime_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/regime/label", "/v1/regime/fit", "/v1/regime/predict", "/v1/models/{model_id}"} <= set(paths)


def test_unknown_route_returns_404_error_body(client: TestClient) -> None:
    _assert_error(client.get("/v1/nope"), 404, "not_found")


def test_api_key_missing_returns_401(tmp_path: Any, sp500_payload: dict[str, Any]) -> None:
    settings = load_settings(home=tmp_path, server={"api_key": "s3cret"})
    with TestClient(create_app(settings)) as tc:
        err = _assert_error(tc.post("/v1/regime/label", json={"data": sp500_payload}), 401, "unauthorized")
        assert "Authorization" in err["message"]
        _assert_error(tc.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert tc.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert tc.get("/health").status_code == 200  # probes stay open


def test_body_over_limit_returns_413(tmp_path: Any, sp500_payload: dict[str, Any]) -> None:
    settings = load_settings(home=tmp_path, server={"max_body_bytes": 2_000})
    with TestClient(create_app(settings)) as tc:
        err = _assert_error(tc.post("/v1/regime/label", json={"data": sp500_payload}), 413, "payload_too_large")
        assert err["details"]["limit_bytes"] == 2_000


def test_rows_over_limit_returns_422_naming_field(tmp_path: Any, sp500_payload: dict[str, Any]) -> None:
    settings = load_settings(home=tmp_path, server={"max_rows": 100})
    with TestClient(create_app(settings)) as tc:
        err = _assert_error(tc.post("/v1/regime/label", json={"data": sp500_payload}), 422, "invalid_input")
        assert "data has 300 rows" in err["message"]


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda d: d["close"].__setitem__(5, float("nan")), "close"),
        (lambda d: d["high"].__setitem__(7, float("inf")), "high"),
        (lambda d: d["low"].pop(), "ragged"),
        (lambda d: d.update(open=[], high=[], low=[], close=[], timestamps=[]), "timestamps"),
        (lambda d: d["close"].__setitem__(3, -1.0), "positive"),
        (lambda d: d["timestamps"].__setitem__(10, d["timestamps"][9]), "increasing"),
        (lambda d: d["close"].__setitem__(4, "abc"), "close"),
        (lambda d: d["timestamps"].__setitem__(-1, d["timestamps"][-1] + "T00:00:00+00:00"), "UTC offset"),
        (lambda d: d["high"].__setitem__(2, d["low"][2] / 2), "high must be"),
    ],
    ids=["nan", "inf", "ragged", "empty", "negative", "duplicate-time", "text", "mixed-tz", "high-below-low"],
)
def test_bad_arrays_return_422_naming_the_field(client: TestClient, sp500_payload: dict[str, Any],
                                                 mutate: Any, fragment: str) -> None:
    data = copy.deepcopy(sp500_payload)
    mutate(data)
    # NaN/inf cannot travel as strict JSON; send them the way Python's json module writes them
    import json

    body = json.dumps({"data": data}, allow_nan=True)
    resp = client.post("/v1/regime/label", content=body, headers={"content-type": "application/json"})
    err = _assert_error(resp, 422, "invalid_input")
    assert fragment in (err["message"] + str(err["details"]))


def test_malformed_json_returns_422(client: TestClient) -> None:
    resp = client.post("/v1/regime/label", content=b"{not json", headers={"content-type": "application/json"})
    _assert_error(resp, 422, "invalid_input")


def test_unknown_field_returns_422(client: TestClient, sp500_payload: dict[str, Any]) -> None:
    resp = client.post("/v1/regime/label", json={"data": sp500_payload, "path": "/etc/passwd"})
    err = _assert_error(resp, 422, "invalid_input")
    assert "path" in str(err["details"])



def test_lifespan_caps_blas_threads_and_restores_them(tmp_path: Any) -> None:
    # BLAS pools are process-wide: checked in a fresh process, so no earlier test's threads can hold them
    code = (
        "import scipy.linalg\n"  # a BLAS loaded before the app starts
        "from fastapi.testclient import TestClient\n"
        "from threadpoolctl import threadpool_info\n"
        "from quantcrew.config.settings import load_settings\n"
        "from quantcrew.ml_server.app import create_app\n"
        "blas = lambda: {p['filepath']: p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas'}\n"
        "before = blas()\n"
        "settings = load_settings()\n"
        "settings.server.compute_threads = 1\n"
        "with TestClient(create_app(settings)):\n"
        "    during = blas()\n"
        "print(bool(before), set(during.values()) == {1}, blas() == before)\n"
    )
    env = {**{k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")},
           "QUANTCREW_HOME": str(tmp_path), "QUANTCREW_SERVER__PRELOAD": "false", "QUANTCREW_SERVER__DEVICE": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-3:] == ["True", "True", "True"]


def test_server_caps_openmp_threads_of_worker_threads_before_loading_models() -> None:
    code = (
        "import threading\n"
        "from quantcrew.ml_server.threads import limit_compute_threads\n"
        "limit_compute_threads(1)\n"
        "import sklearn.cluster\n"
        "from threadpoolctl import threadpool_info\n"
        "out = []\n"
        "t = threading.Thread(target=lambda: out.extend(p['num_threads'] for p in threadpool_info()))\n"
        "t.start(); t.join()\n"
        "print(max(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"
