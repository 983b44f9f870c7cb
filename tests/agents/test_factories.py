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


def test_strategy_agent_and_meta_orchestrator_get_their_tools(settings: Settings) -> None:
    from quantcrew.agents.factories import make_meta_orchestrator, make_strategy_agent
    from quantcrew.tools import AgentSelectionTool, StrategySignalTool

    llm = PlannerLLM(inputs={"symbol": "SP500"})
    strategy = make_strategy_agent(settings, tools=[StrategySignalTool(settings=settings)], llm=llm)
    meta = make_meta_orchestrator(settings, tools=[AgentSelectionTool(settings=settings)], llm=llm)
    assert strategy.role.strip() == "Trading Strategy Specialist"
    assert meta.role.strip() == "Meta-Orchestrator"
    assert [t.name for t in strategy.tools] == ["strategy_signals"]
    assert [t.name for t in meta.tools] == ["agent_selection"]
    assert strategy.llm is llm and meta.llm is llm
    assert AGENT_FACTORIES["strategy_agent"] is make_strategy_agent
    assert AGENT_FACTORIES["meta_orchestrator"] is make_meta_orchestrator
    assert "never invent" in agent_config("strategy_agent")["backstory"]
    assert "bandit" in agent_config("meta_orchestrator")["backstory"]
