"""The one error map: domain errors located by the handler, the 413 rendered from its domain error."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
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
