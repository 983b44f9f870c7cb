"""A crewAI agent whose only tools come from the server's ``/mcp`` (``mcps=[MCPServerHTTP(...)]``), offline LLM."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from quantcrew.crew.server_process import LocalServer
from tests.support.servers import CHILD_SERVER_ENV

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "crew_over_mcp.py"
_KEY = "crew-over-mcp-key-0123456789abcdef"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crew_over_mcp", _EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A child server with an API key: the agent reaches /mcp with it as any remote crew would."""
    home = tmp_path_factory.mktemp("mcp-crew-home")
    server = LocalServer(env={"QUANTCREW_HOME": str(home), **CHILD_SERVER_ENV, "QUANTCREW_SERVER__API_KEY": _KEY},
                         log_path=home / "server.log").start()
    try:
        yield server
    finally:
        server.stop()


def test_crew_agent_uses_the_server_tools_over_mcp(keyed_server: LocalServer, refused: list[str]) -> None:
    example = _example()
    example.ensure_bandit(keyed_server.url, _KEY)
    plan = example.desk_plan()
    llm = example.ToolPlanLLM(plan, final_text="Desk call from MCP tools.")
    crew = example.build_crew(f"{keyed_server.url}/mcp", _KEY, llm, tools=[name for name, _ in plan])
    output = str(crew.kickoff())  # the plan names the tools by their MCP names: one not offered would raise

    with httpx.Client(base_url=keyed_server.url, headers={"Authorization": f"Bearer {_KEY}"}, timeout=30) as rest:
        bandit = rest.get(f"/v1/bandit/{example.DESK_BANDIT}").json()
        var = rest.post("/v1/risk/var", json=plan[1][1])
        label = rest.post("/v1/regime/label", json=plan[0][1]).json()
    decisions = [regime for regime in bandit["regimes"] if regime["decisions"]]
    # the agent's bandit_select reached the server, for the regime its regime_label answered
    assert [(regime["regime"], regime["decisions"]) for regime in decisions] == [(label["current_label"], 1)]
    assert var.status_code == 200
    assert output.startswith("Desk call from MCP tools.")
    assert var.text in output  # the agent's risk_var observation is the REST reply, byte for byte
    assert '"decision_id":"dec-' in output
    assert refused == []
