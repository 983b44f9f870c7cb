"""Failover between two real ML servers (uvicorn child processes on loopback, each on its own home).

The first server is killed with SIGKILL between calls: every later call is answered by the second, none
lost, and no bandit decision (a call that must not be made twice) recorded twice; the first comes back on
its port and home, and once its breaker's pause is over the client returns to it. Servers that do not
exist (closed loopback ports) give the all-down error; bad URL settings give an error naming the field.
The routing rules themselves are unit-tested over httpx.MockTransport in tests/tools/test_servers.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from quantcrew.config.settings import ClientSettings, SettingsError, load_settings
from quantcrew.crew.server_process import free_port
from quantcrew.ml_server.schemas.bandit import BanditCreateRequest, BanditSelectRequest
from quantcrew.ml_server.schemas.risk import VarRequest
from quantcrew.tools.breaker import BreakerState
from quantcrew.tools.client import MLClient, make_async_client, make_client
from quantcrew.tools.errors import CircuitOpenError, MLServerUnavailable
from tests.support.servers import CHILD_SERVER_ENV

pytestmark = pytest.mark.integration

RESET_S = 1.0
"""The breakers' pause: short, so that the test sees the primary come back."""


class ChildServer:
    """``python -m quantcrew.ml_server`` on a loopback port, killed for real when a test says so."""

    def __init__(self, home: Path, port: int | None = None) -> None:
        self.home = home
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> ChildServer:
        """Start the process (it boots in the background; ``wait_ready`` waits for it)."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **CHILD_SERVER_ENV, "QUANTCREW_HOME": str(self.home)}
        with open(self.home / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "quantcrew.ml_server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> ChildServer:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {(self.home / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server at {self.url} not ready after {timeout_s:g} s")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye; the port refuses connections once the process is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ChildServer, ChildServer]]:
    """Two servers, booted side by side, each on its own home."""
    first = ChildServer(tmp_path_factory.mktemp("first-home")).spawn()
    second = ChildServer(tmp_path_factory.mktemp("second-home")).spawn()
    try:
        first.wait_ready()
        second.wait_ready()
        for server in (first, second):  # the same bandit on both: a select may be answered by either
            with MLClient(httpx.Client(base_url=server.url)) as one:
                one.bandit_create(BanditCreateRequest(name="desk", policy="ucb1", arms=["a", "b"],
                                                      regimes=["bull"]))
        yield first, second
    finally:
        first.stop()
        second.stop()


def _var_request() -> VarRequest:
    values = np.random.default_rng(0).normal(0.0, 0.01, (60, 2)).round(6).tolist()
    return VarRequest.model_validate({"data": {"columns": ["x", "y"], "values": values}, "methods": ["historical"]})


def _decisions(url: str) -> int:
    with MLClient(httpx.Client(base_url=url)) as one:
        return one.bandit_state("desk").bandit.decisions


def _closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: the kernel refuses the connection


def test_async_client_skips_a_server_that_is_not_there(pair: tuple[ChildServer, ChildServer]) -> None:
    _, second = pair
    before = _decisions(second.url)

    async def scenario() -> None:
        settings = ClientSettings(urls=[_closed_url(), second.url], breaker_reset_s=RESET_S)
        async with make_async_client(settings) as client:
            await client.bandit_select(BanditSelectRequest(bandit="desk", regime="bull"))
            assert client.last_call is not None and client.last_call.url == second.url
            replies = await asyncio.gather(*(client.risk_var(_var_request()) for _ in range(4)))
            assert len({r.data_hash for r in replies}) == 1
            assert client.servers[0].state is BreakerState.OPEN

    asyncio.run(scenario())
    assert _decisions(second.url) == before + 1


def test_a_killed_primary_hands_every_later_call_to_the_second_and_gets_them_back(
        pair: tuple[ChildServer, ChildServer]) -> None:
    first, second = pair
    start = {server.url: _decisions(server.url) for server in pair}
    client = make_client(ClientSettings(urls=[first.url, second.url], breaker_reset_s=RESET_S))
    request = _var_request()
    answered: list[tuple[str, str]] = []  # (phase, url) of every call, none may raise
    decisions: list[str] = []

    def calls(phase: str, rounds: int) -> None:
        for _ in range(rounds):
            client.risk_var(request)
            assert client.last_call is not None and client.last_call.url is not None
            answered.append((phase, client.last_call.url))
            decision = client.bandit_select(BanditSelectRequest(bandit="desk", regime="bull"))
            assert client.last_call.url is not None
            answered.append((phase, client.last_call.url))
            decisions.append(decision.decision_id)

    calls("before", 3)
    first.kill()
    back = ChildServer(first.home, first.port).spawn()  # the primary comes back on its port and home while...
    try:
        calls("killed", 4)  # ...the second answers
        back.wait_ready()
        time.sleep(RESET_S)  # the primary's pause is over: the next call probes it, then uses it
        calls("back", 3)
        assert {(phase, url) for phase, url in answered} == {
            ("before", first.url), ("killed", second.url), ("back", first.url)}
        assert len(answered) == 20 and len(set(decisions)) == 10  # nothing lost
        # each select recorded exactly once, on the server that answered it
        assert _decisions(second.url) - start[second.url] == 4
        assert _decisions(first.url) - start[first.url] == 6
    finally:
        client.close()
        back.stop()


def test_every_server_down_is_one_error_naming_them_all() -> None:
    urls = [_closed_url(), _closed_url()]
    with make_client(ClientSettings(urls=urls, retries=1, backoff_s=0.0, breaker_failures=2)) as client:
        with pytest.raises(MLServerUnavailable) as raised:
            client.risk_var(_var_request())
        assert raised.value.servers_tried == tuple(urls)
        assert all(url in str(raised.value) for url in urls) and "ConnectError" in str(raised.value)
        with pytest.raises(CircuitOpenError) as refused:
            client.bandit_select(BanditSelectRequest(bandit="desk", regime="bull"))
        assert all(url in str(refused.value) for url in urls)


@pytest.mark.parametrize("value", ["http://127.0.0.1:8001, http://127.0.0.1:8002/",
                                   '["http://127.0.0.1:8001", "http://127.0.0.1:8002"]'])
def test_urls_come_from_the_environment_as_a_list_or_comma_separated(
        monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("QUANTCREW_CLIENT__URLS", value)
    client = load_settings().client
    assert client.server_urls == ["http://127.0.0.1:8001", "http://127.0.0.1:8002"]
    assert client.url == "http://127.0.0.1:8001"  # the primary: whatever asks "is a server named?" sees it


def test_url_and_urls_together_put_url_first_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTCREW_CLIENT__URL", "http://127.0.0.1:8002")
    monkeypatch.setenv("QUANTCREW_CLIENT__URLS", "http://127.0.0.1:8001,http://127.0.0.1:8002")
    assert load_settings().client.server_urls == ["http://127.0.0.1:8002", "http://127.0.0.1:8001"]
    assert load_settings().client.model_copy().server_urls == ["http://127.0.0.1:8002", "http://127.0.0.1:8001"]


@pytest.mark.parametrize(("value", "says"), [
    ("http://127.0.0.1:8001,ftp://127.0.0.1:8002", "entry 1: must start with http:// or https://"),
    ("http://127.0.0.1:notaport", "entry 0: not a valid URL"),
    ("http://:8001", "entry 0: names no host"),
    ('["http://127.0.0.1:8001",', "not a JSON list of URLs"),
])
def test_bad_urls_are_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, value: str, says: str) -> None:
    monkeypatch.setenv("QUANTCREW_CLIENT__URLS", value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "client.urls (QUANTCREW_CLIENT__URLS)" in str(raised.value) and says in str(raised.value)
