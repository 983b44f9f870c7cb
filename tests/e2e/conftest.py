"""A real ML server: ``quantcrew-server`` in a child process on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.crew.server_process import LocalServer
from tests.support.offline import isolate_crewai
from tests.support.servers import POOL, local_server, plan_servers, pool_key, pool_servers

pool_servers(Path(__file__).parent, {"live_server": ("session", False), "own_server": ("module", True)})


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the servers the tests will use while the tests before them run (tests/support/servers.py)."""
    plan_servers(session)


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One server with nothing trained on it, shared by the modules that never train on it.

    Its home holds no RL policy, ensemble or execution network for the whole session (tests
    assert the crew degrades to rules on it); a module that trains models uses ``own_server``.
    """
    server = (POOL.take(pool_key("live_server", Path(__file__).parent))
              or local_server(Path(tmp_path_factory.mktemp("server-home"))).start())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def own_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A fresh server for one module that trains models on it."""
    server = (POOL.take(pool_key("own_server", request.module.__name__))
              or local_server(Path(tmp_path_factory.mktemp("trained-server-home")), trains=True).start())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """CrewAI kept offline; the list of refused non-loopback connections (a test asserts it stays empty)."""
    return isolate_crewai(monkeypatch, tmp_path)
