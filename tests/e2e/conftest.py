"""A real ML server: ``quantcrew-server`` in a child process on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.crew.server_process import LocalServer
from tests.support.offline import isolate_crewai
from tests.support.servers import local_server


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One server with nothing trained on it, shared by the modules that never train on it.

    Its home holds no RL policy, ensemble or execution network for the whole session (tests
    assert the crew degrades to rules on it); a module that trains models uses ``own_server``.
    """
    with local_server(Path(tmp_path_factory.mktemp("server-home"))) as server:
        yield server


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A fresh server for one module that trains models on it."""
    with local_server(Path(tmp_path_factory.mktemp("trained-server-home")), trains=True) as server:
        yield server


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """CrewAI kept offline; the list of refused non-loopback connections (a test asserts it stays empty)."""
    return isolate_crewai(monkeypatch, tmp_path)
