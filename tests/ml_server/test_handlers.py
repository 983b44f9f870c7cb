"""The one error map: domain errors located by the handler, the 413 rendered from its domain error, an
unexpected error answered as a JSON 500 on a connection that stays usable."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi.testclient import TestClient

from quantcrew.config.settings import load_settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.errors import InvalidInputError, PayloadTooLargeError
from quantcrew.ml_server.handlers import domain_error_response


def _body(exc: Exception) -> dict[str, Any]:
    assert isinstance(exc, InvalidInputError | PayloadTooLargeError)
    return dict(orjson.loads(domain_error_response(exc).body)["error"])


def test_domain_error_loc_gets_the_body_location() -> None:
    err = _body(InvalidInputError("bad", details=[{"loc": ["data", "close"], "msg": "bad"}]))
    assert err["details"] == [{"loc": ["body", "data", "close"], "msg": "bad"}]


@pytest.mark.parametrize("where", ["path", "query", "header", "body"])
def test_domain_error_loc_naming_an_http_part_is_kept(where: str) -> None:
    err = _body(InvalidInputError("bad", details=[{"loc": [where, "bandit"], "msg": "bad"}]))
    assert err["details"][0]["loc"] == [where, "bandit"]


def test_domain_error_empty_loc_means_the_whole_body() -> None:
    err = _body(InvalidInputError("bad", details=[{"loc": [], "msg": "bad"}]))
    assert err["details"][0]["loc"] == ["body"]


def test_domain_error_details_without_loc_are_unchanged() -> None:
    details = {"model_id": "regime-abc", "rows": 3}
    assert _body(InvalidInputError("bad", details=details))["details"] == details
    assert _body(InvalidInputError("bad", details=["x", {"msg": "no loc"}]))["details"] == ["x", {"msg": "no loc"}]


def test_domain_error_does_not_mutate_the_raised_details() -> None:
    details = [{"loc": ["data"], "msg": "bad"}]
    _body(InvalidInputError("bad", details=details))
    assert details == [{"loc": ["data"], "msg": "bad"}]


def test_service_error_reaches_the_wire_with_body_loc(tmp_path: Any) -> None:
    settings = load_settings(home=tmp_path, server={"max_rows": 5})
    rows = [[0.01 * i, -0.02 * i] for i in range(10)]
    with TestClient(create_app(settings)) as tc:
        resp = tc.post("/v1/risk/covariance", json={"data": {"columns": ["a", "b"], "values": rows}})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["details"][0]["loc"][:2] == ["body", "data"]


def test_too_large_body_is_rendered_by_the_error_map(tmp_path: Any) -> None:
    settings = load_settings(home=tmp_path, server={"max_body_bytes": 100})
    with TestClient(create_app(settings)) as tc:
        resp = tc.post("/v1/risk/covariance", content=b"x" * 500, headers={"content-type": "application/json"})
    expected = PayloadTooLargeError(
        "request body of 500 bytes exceeds the limit of 100 bytes (QUANTCREW_SERVER__MAX_BODY_BYTES)",
        details={"limit_bytes": 100, "received_bytes": 500},
    )
    assert resp.status_code == 413
    assert resp.json() == orjson.loads(domain_error_response(expected).body)


def test_too_large_chunked_body_is_refused_with_413(tmp_path: Any) -> None:
    settings = load_settings(home=tmp_path, server={"max_body_bytes": 100})

    def chunks() -> Any:
        for _ in range(10):
            yield b"x" * 50

    with TestClient(create_app(settings)) as tc:
        resp = tc.post("/v1/risk/covariance", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"
    assert resp.json()["error"]["details"]["limit_bytes"] == 100


def _fail() -> None:
    raise RuntimeError("a bug in a route")


@pytest.fixture
def failing_server(tmp_path: Any) -> Iterator[str]:
    """A real uvicorn server on an app with one extra route that raises, for this test only."""
    app = create_app(load_settings(home=tmp_path))
    app.add_api_route("/test-only/fail", _fail, methods=["GET"])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="critical", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _local_port(resp: httpx.Response) -> int:
    port: int = resp.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


def test_unexpected_error_is_a_json_500_and_the_connection_stays_usable(failing_server: str) -> None:
    with httpx.Client(base_url=failing_server, timeout=10) as client:
        failed = client.get("/test-only/fail")
        failed_port = _local_port(failed)
        time.sleep(0.2)  # time for a close the server might send after its reply to arrive
        after = client.get("/health")
        after_port = _local_port(after)
    assert failed.status_code == 500
    assert failed.json()["error"] == {"code": "internal_error", "message": "unexpected server error: RuntimeError",
                                      "details": None}
    assert failed.headers.get("connection", "").lower() != "close"
    assert after.status_code == 200 and after.json()["status"] == "ok"
    # the same connection served both: the server kept it open after the error
    assert after_port == failed_port


def test_unexpected_error_in_process_is_the_one_500_body(tmp_path: Any) -> None:
    app = create_app(load_settings(home=tmp_path))
    app.add_api_route("/test-only/fail", _fail, methods=["GET"])
    with TestClient(app) as tc:
        resp = tc.get("/test-only/fail")
        assert tc.get("/health").status_code == 200
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "internal_error"
