"""A real ML server for the crew class and the daily flow: ``quantcrew-server`` in a child process, its bandit
taught to follow one agent, so that decisions hold positions (the rules of an untrained home say flat for the
bandit's default first agent, which would make every decision alike)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.config.settings import load_settings
from quantcrew.crew.server_process import LocalServer
from tests.support.servers import POOL, local_server, plan_servers, pool_key, pool_servers

pool_servers(Path(__file__).parent, {"crew_server": ("session", False)})

FOLLOWED = "balanced"
"""The agent the taught bandit follows in every regime (its rule holds a position on the test dates)."""


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the server while the tests before its first user run (tests/support/servers.py)."""
    plan_servers(session)


@pytest.fixture(scope="session")
def crew_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One server, nothing trained on it but its bandit (see :func:`taught_server`)."""
    server = (POOL.take(pool_key("crew_server", Path(__file__).parent))
              or local_server(Path(tmp_path_factory.mktemp("crew-server-home"))).start())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def taught_server(crew_server: LocalServer, tmp_path_factory: pytest.TempPathFactory) -> LocalServer:
    """The server with its meta-orchestrator bandit rewarded once for following :data:`FOLLOWED` in each regime.

    Taught as the crew's own tool teaches it: a selection that lets the bandit draw, then the reward for it.
    """
    from quantcrew.ml_server.schemas.regime import REGIME_LABELS
    from quantcrew.tools.base import ToolResult
    from quantcrew.tools.client import make_client
    from quantcrew.tools.selection import AgentSelectionTool

    settings = load_settings(home=tmp_path_factory.mktemp("teacher-home"))
    settings.client.url = crew_server.url
    results: list[ToolResult] = []
    with make_client(settings.client) as client:
        tool = AgentSelectionTool(settings=settings, client=client, on_result=results.append)
        for regime in REGIME_LABELS:
            for _ in range(60):  # each draw picks FOLLOWED with probability 1/4 on an untaught regime
                tool.run(symbol="SP500", regime=regime, explore=True)
                drawn = results[-1]
                assert drawn.ok and not drawn.degraded, drawn.summary
                if drawn.data["agent"] == FOLLOWED:
                    tool.run(decision_id=drawn.data["decision_id"], reward=0.05)
                    assert results[-1].ok, results[-1].summary
                    break
            else:
                raise AssertionError(f"the bandit never drew {FOLLOWED} in regime {regime}")
    return crew_server
