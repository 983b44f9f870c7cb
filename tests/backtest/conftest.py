"""Walk-forward fixtures: a real ML server in a child process, a client, small markets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.crew.server_process import LocalServer
from quantcrew.data import generate_regime_market
from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.client import MLClient


@pytest.fixture(scope="session")
def wf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """``quantcrew-server`` on a free loopback port with a throwaway home, for the whole session."""
    home = tmp_path_factory.mktemp("wf-server-home")
    with LocalServer(env={"QUANTCREW_HOME": str(home)}, log_path=Path(home) / "server.log") as server:
        yield server


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
