"""Walk-forward fixtures: a real ML server in a child process, a client, small markets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.crew.server_process import LocalServer
from quantcrew.data import generate_regime_market
from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.client import MLClient
from tests.support.servers import POOL, local_server, plan_servers, pool_key, pool_servers

pool_servers(Path(__file__).parent, {"wf_server": ("session", True)})


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the servers the tests will use while the tests before them run (tests/support/servers.py)."""
    plan_servers(session)


@pytest.fixture(scope="session")
def wf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """``quantcrew-server`` on a free loopback port with a throwaway home, for the whole session."""
    server = (POOL.take(pool_key("wf_server", Path(__file__).parent))
              or local_server(Path(tmp_path_factory.mktemp("wf-server-home")), trains=True).start())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def wf_client(wf_server: LocalServer) -> Iterator[MLClient]:
    """A client of the live server, no retries (a fault should fail the test, not be hidden)."""
    import httpx

    with MLClient(httpx.Client(base_url=wf_server.url, timeout=60.0), retries=0) as client:
        yield client


@pytest.fixture(scope="session")
def synth_bars() -> OHLCV:
    """560 bars of a regime-switching market (2000-01-03 on): 300 of history, 260 to trade."""
    return generate_regime_market(560, seed=3).bars


@pytest.fixture(scope="session")
def synth_pair() -> tuple[OHLCV, OHLCV]:
    """Two regime-switching markets on the same business days."""
    a = generate_regime_market(460, seed=5, symbol="AAA").bars
    b = generate_regime_market(460, seed=6, symbol="BBB").bars
    return a, b
