"""A real ML server with an API key, served by uvicorn in a thread on a loopback port, for the MCP tests.

One server for the package: the MCP client, the REST client and the assertions all talk to it over HTTP; the
app object is kept so that a test can also look at its state (the prediction log, the bandit store).
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from quantcrew.config.settings import load_settings
from quantcrew.ml_server.app import create_app

API_KEY = "mcp-test-key-0123456789abcdef0123"


@dataclass(frozen=True)
class LiveApp:
    """A served app: its base URL, its key, the app itself."""

    url: str
    key: str
    app: FastAPI

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    @property
    def mcp_url(self) -> str:
        return f"{self.url}/mcp"


@pytest.fixture(scope="package")
def live_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApp]:
    settings = load_settings(home=tmp_path_factory.mktemp("mcp-home"))
    settings.server.api_key = SecretStr(API_KEY)
    settings.server.device = "cpu"  # no torch import to look for a GPU: no test here runs a torch model
    settings.server.preload = False
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="mcp-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield LiveApp(f"http://127.0.0.1:{port}", API_KEY, app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def mcp_session(live_app: LiveApp) -> Callable[..., AbstractAsyncContextManager[ClientSession]]:
    """Opens an initialised MCP client session on the live app (``headers`` default to the right key)."""

    @asynccontextmanager
    async def session(headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
        http = httpx.AsyncClient(headers=live_app.headers if headers is None else headers, timeout=30)
        async with http, streamable_http_client(live_app.mcp_url, http_client=http) as (read, write, _), \
                ClientSession(read, write) as client:
            await client.initialize()
            yield client

    return session


@pytest.fixture(scope="package")
def rest(live_app: LiveApp) -> Iterator[httpx.Client]:
    """A REST client on the live app, with its key."""
    with httpx.Client(base_url=live_app.url, headers=live_app.headers, timeout=30) as client:
        yield client
