"""``/mcp`` on the app: behind the API key, under the body limits, off with ``server.mcp``, tied to the lifespan."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from fastapi.testclient import TestClient
from mcp import ClientSession
from pydantic import SecretStr

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.mcp_server import McpEndpoint
from tests.ml_server.mcp_server.conftest import LiveApp

Session = Callable[..., AbstractAsyncContextManager[ClientSession]]

_INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
               "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                          "clientInfo": {"name": "test", "version": "0"}}}
_MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def _statuses(group: BaseException) -> list[int]:
    """HTTP statuses of the ``httpx.HTTPStatusError`` in an exception (group)."""
    if isinstance(group, BaseExceptionGroup):
        return [status for inner in group.exceptions for status in _statuses(inner)]
    return [group.response.status_code] if isinstance(group, httpx.HTTPStatusError) else []


@pytest.mark.integration
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-the-key"}], ids=["no key", "wrong key"])
async def test_mcp_client_without_the_key_gets_401(mcp_session: Session, headers: dict[str, str]) -> None:
    with pytest.raises(BaseException) as refused:  # the client raises the 401 inside its task group
        async with mcp_session(headers):
            pass
    assert _statuses(refused.value) == [401]


@pytest.mark.integration
def test_mcp_refusal_is_the_one_401_body(live_app: LiveApp) -> None:
    missing = httpx.post(live_app.mcp_url, json=_INITIALIZE, headers=_MCP_HEADERS)
    wrong = httpx.post(live_app.mcp_url, json=_INITIALIZE, headers={**_MCP_HEADERS, "Authorization": "Bearer nope"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "unauthorized" and "missing API key" in missing.json()["error"]["message"]
    assert wrong.json()["error"]["message"] == "wrong API key"
    ok = httpx.post(live_app.mcp_url, json=_INITIALIZE, headers={**_MCP_HEADERS, **live_app.headers})
    assert ok.status_code == 200 and ok.json()["result"]["serverInfo"]["name"] == "quantcrew"


def test_body_over_the_limit_is_refused_before_mcp_reads_it(settings: Settings) -> None:
    settings.server.max_body_bytes = 2_000
    with TestClient(create_app(settings)) as client:
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "risk_var", "arguments": {"data": {"columns": ["a"], "values": [[0.0]] * 500}}}}
        reply = client.post("/mcp", json=call, headers=_MCP_HEADERS)
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "payload_too_large"


def test_mcp_off_leaves_no_route(settings: Settings) -> None:
    settings.server.mcp = False
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.post("/mcp", json=_INITIALIZE, headers=_MCP_HEADERS).status_code == 404
    assert not isinstance(getattr(app.state, "mcp", None), McpEndpoint)


def test_mcp_answers_only_while_the_lifespan_runs(settings: Settings) -> None:
    settings.server.api_key = SecretStr("k" * 32)
    app = create_app(settings)
    headers = {**_MCP_HEADERS, "Authorization": "Bearer " + "k" * 32}
    before = TestClient(app).post("/mcp", json=_INITIALIZE, headers=headers)  # no lifespan: nothing serves
    with TestClient(app) as client:
        during = client.post("/mcp", json=_INITIALIZE, headers=headers)
    with TestClient(app) as client:  # a second run of the lifespan runs a session manager of its own
        again = client.post("/mcp", json=_INITIALIZE, headers=headers)
    assert before.status_code == 503 and before.json()["error"]["code"] == "not_ready"
    assert during.status_code == again.status_code == 200


def test_preload_starts_the_mcp_server_without_a_request(settings: Settings) -> None:
    settings.server.preload = True
    app = create_app(settings)
    with TestClient(app):
        endpoint = app.state.mcp
        deadline = time.monotonic() + 30
        while endpoint._manager is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert endpoint._manager is not None
    assert endpoint._manager is None  # stopped with the app
