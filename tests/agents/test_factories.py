"""crewAI YAML kept in parity with the code."""

from __future__ import annotations

import yaml

from quantcrew.agents import AGENT_FACTORIES, agent_config, make_regime_analyst
from quantcrew.config.paths import AGENTS_YAML, TASKS_YAML
from quantcrew.config.settings import Settings
from quantcrew.crew.planner_llm import PlannerLLM
from quantcrew.tools import RegimeDetectionTool


def test_every_yaml_agent_has_a_factory_and_back() -> None:
    agents = yaml.safe_load(AGENTS_YAML.read_text())
    assert set(agents) == set(AGENT_FACTORIES)
    for entry in agents.values():
        assert set(entry) == {"role", "goal", "backstory"}


def test_every_task_names_a_known_agent() -> None:
    tasks = yaml.safe_load(TASKS_YAML.read_text())
    for key, entry in tasks.items():
        assert set(entry) == {"description", "expected_output", "agent"}, key
        assert entry["agent"] in AGENT_FACTORIES


def test_regime_analyst_gets_its_tools_and_llm(settings: Settings) -> None:
    tool = RegimeDetectionTool(settings=settings)
    llm = PlannerLLM(inputs={"symbol": "SP500"})
    agent = make_regime_analyst(settings, tools=[tool], llm=llm)
    assert agent.role.strip() == agent_config("regime_analyst")["role"].strip()
    assert [t.name for t in agent.tools] == ["regime_detection"]
    assert agent.llm is llm
