"""The API key: checked from the headers before the body is read, on /v1 and (by one setting) the ops routes."""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from quantcrew.config.settings import load_settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.security import OPS_PATHS, APIKeyMiddleware, needs_key

KEY = {"Authorization": "Bearer s3cret"}


def _keyed_client(home: Path, **server: Any) -> TestClient:
    return TestClient(create_app(load_settings(home=home, server={"api_key": "s3cret", **server})))


def test_refusal_without_key_never_reads_the_body() -> None:
    reads = 0
    reached = False

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached
        reached = True

    async def receive() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1024, "more_body": True}

    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    middleware = APIKeyMiddleware(app, key=b"s3cret", protect_ops=True)
    for headers in ([], [(b"authorization", b"Bearer nope")], [(b"authorization", b"Basic s3cret")]):
        sent.clear()
        scope = {"type": "http", "method": "POST", "path": "/v1/risk/var", "headers": headers}
        asyncio.run(middleware(scope, receive, send))
        assert sent[0]["status"] == 401
        assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]
    assert reads == 0 and not reached


def test_wrong_key_on_a_huge_body_is_401_not_413(tmp_path: Path) -> None:
    with _keyed_client(tmp_path, max_body_bytes=1_000) as tc:
        resp = tc.post("/v1/risk/var", content=b"[" + b"1," * 10_000 + b"1]",
                       headers={"content-type": "application/json", "Authorization": "Bearer wrong"})
        assert resp.status_code == 401
        assert resp.json()["error"] == {"code": "unauthorized", "message": "wrong API key",
                                        "details": {"header": "Authorization"}}


def test_ops_routes_need_the_key_when_protected(tmp_path: Path) -> None:
    with _keyed_client(tmp_path) as tc:
        assert {path: tc.get(path).status_code for path in OPS_PATHS} == dict.fromkeys(OPS_PATHS, 401)
        assert tc.get("/ready", headers=KEY).status_code == 200
        assert tc.get("/metrics", headers=KEY).status_code == 200
        assert tc.get("/health").status_code == 200  # liveness stays open


def test_ops_routes_stay_open_when_protect_ops_is_false(tmp_path: Path) -> None:
    with _keyed_client(tmp_path, protect_ops=False) as tc:
        assert [tc.get(path).status_code for path in sorted(OPS_PATHS)] == [200] * len(OPS_PATHS)
        assert tc.get("/v1/models").status_code == 401  # the API itself still needs the key


def test_needs_key_covers_v1_always_and_ops_by_setting() -> None:
    assert needs_key("/v1/regime/fit", protect_ops=False) and needs_key("/v1", protect_ops=False)
    assert not needs_key("/v1x", protect_ops=True) and not needs_key("/health", protect_ops=True)
    assert needs_key("/metrics", protect_ops=True) and not needs_key("/metrics", protect_ops=False)


def test_openapi_declares_the_bearer_scheme_on_the_routes_that_need_it(tmp_path: Path) -> None:
    with _keyed_client(tmp_path) as tc:
        spec = tc.get("/openapi.json", headers=KEY).json()
        assert "Authorization: Bearer" in tc.get("/docs", headers=KEY).text
    scheme = spec["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer") and "server.api_key" in scheme["description"]
    assert spec["paths"]["/v1/regime/fit"]["post"]["security"] == [{"bearer": []}]
    assert spec["paths"]["/ready"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/health"]["get"]


def test_openapi_has_no_scheme_when_no_key_is_set(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})
    assert "security" not in spec["paths"]["/v1/regime/fit"]["post"]
