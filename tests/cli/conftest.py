"""A real ML server for the commands that talk to one: ``quantcrew-server`` in a child process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.crew.server_process import LocalServer


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """The server on a free loopback port with a throwaway home, for one test module."""
    home = tmp_path_factory.mktemp("cli-server-home")
    with LocalServer(env={"QUANTCREW_HOME": str(home)}, log_path=Path(home) / "server.log") as server:
        yield server
