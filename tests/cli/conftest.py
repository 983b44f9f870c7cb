"""A real ML server for the commands that talk to one: ``quantcrew-server`` in a child process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.crew.server_process import LocalServer
from tests.support.servers import local_server


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """The server on a free loopback port with a throwaway home, shared by the CLI tests (none trains on it)."""
    with local_server(Path(tmp_path_factory.mktemp("cli-server-home"))) as server:
        yield server
