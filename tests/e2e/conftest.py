"""A real ML server: ``quantcrew-server`` in a child process on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.crew.server_process import LocalServer
from tests.support.offline import isolate_crewai


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    home = tmp_path_factory.mktemp("server-home")
    server = LocalServer(env={"QUANTCREW_HOME": str(home), "QUANTCREW_SERVER__PRELOAD": "false"},
                         log_path=Path(home) / "server.log")
    with server:
        yield server


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """CrewAI kept offline; the list of refused non-loopback connections (a test asserts it stays empty)."""
    return isolate_crewai(monkeypatch, tmp_path)
