"""Crew assembly: placeholders supplied, LLM selection, no side effects."""

from __future__ import annotations

import pytest
from crewai import LLM
from pydantic import SecretStr

from quantcrew.config.settings import Settings
from quantcrew.crew.crew import DEFAULT_INPUTS, build_regime_crew, make_llm, required_inputs
from quantcrew.crew.planner_llm import PlannerLLM
from quantcrew.tools import RegimeDetectionTool


def test_default_inputs_supply_every_placeholder() -> None:
    from quantcrew.crew.crew import CREWS
    from quantcrew.crew.kickoff import normalise_inputs

    for kind, spec in CREWS.items():
        assert required_inputs(*spec.tasks) <= set(normalise_inputs(kind, spec.defaults)), kind
    assert "symbol" in required_inputs("regime_analysis")
    assert {"symbols", "weights", "drawdown"} <= required_inputs(*CREWS["full"].tasks)


def test_every_agent_and_task_named_in_code_is_in_the_yaml() -> None:
    import yaml

    from quantcrew.agents.factories import AGENT_FACTORIES
    from quantcrew.config.paths import AGENTS_YAML, TASKS_YAML
    from quantcrew.crew.crew import CREWS

    agents = yaml.safe_load(AGENTS_YAML.read_text())
    tasks = yaml.safe_load(TASKS_YAML.read_text())
    assert set(AGENT_FACTORIES) == set(agents)
    for spec in CREWS.values():
        assert set(spec.tasks) <= set(tasks)
        assert set(spec.agent_tools) <= set(agents)
        assert set(spec.outputs) <= set(spec.tasks)
    assert {cfg["agent"] for cfg in tasks.values()} <= set(agents)
    for cfg in agents.values():
        assert set(cfg) == {"role", "goal", "backstory"}
    for cfg in tasks.values():
        assert set(cfg) == {"description", "expected_output", "agent"}


def test_normalise_inputs_fills_symbols_and_equal_weights() -> None:
    from quantcrew.crew.kickoff import normalise_inputs

    full = normalise_inputs("full", {"symbols": "SP500,NASDAQ,VIX", "lookback": None})
    assert full["symbol"] == "SP500" and full["weights"] == "0.333333,0.333333,0.333333"
    assert full["lookback"] == 750
    assert normalise_inputs("regime", {"symbol": "NASDAQ"})["symbols"] == "NASDAQ"


def test_build_full_crew_has_four_agents_and_views(settings: Settings) -> None:
    from quantcrew.crew.crew import CREWS, build_crew
    from quantcrew.crew.decision import Decision
    from quantcrew.crew.views import RegimeView, RiskView, StrategyView

    spec = CREWS["full"]
    crew = build_crew("full", settings, tools=spec.make_agent_tools(settings), llm=PlannerLLM(inputs=spec.defaults))
    assert [a.role.strip() for a in crew.agents] == ["Market Regime Analyst", "Portfolio Risk Manager",
                                                     "Trading Strategy Specialist", "Meta-Orchestrator"]
    assert [t.output_pydantic for t in crew.tasks] == [RegimeView, RiskView, StrategyView, Decision]
    assert crew.process.value == "sequential"


def test_build_full_crew_hierarchical_makes_the_meta_orchestrator_manager(settings: Settings) -> None:
    from quantcrew.crew.crew import CREWS, build_crew

    spec = CREWS["full"]
    crew = build_crew("full", settings, tools=spec.make_agent_tools(settings), llm=PlannerLLM(inputs=spec.defaults),
                      process="hierarchical")
    assert crew.process.value == "hierarchical"
    assert crew.manager_agent is not None and crew.manager_agent.role.strip() == "Meta-Orchestrator"
    assert crew.manager_agent.tools == [] and all(t.agent is None for t in crew.tasks)


def test_build_crew_unknown_process_is_refused(settings: Settings) -> None:
    import pytest

    from quantcrew.crew.crew import build_crew

    with pytest.raises(ValueError, match="process must be one of"):
        build_crew("regime", settings, tools=[], llm=PlannerLLM(), process="parallel")


def test_make_llm_defaults_to_offline_planner(settings: Settings) -> None:
    llm = make_llm(settings, {"symbol": "SP500"})
    assert isinstance(llm, PlannerLLM)


def test_make_llm_builds_crewai_llm_with_base_url(settings: Settings) -> None:
    settings.crew.llm = "openai/gpt-4o-mini"
    settings.crew.llm_base_url = "http://127.0.0.1:9/v1"
    llm = make_llm(settings, {})
    assert isinstance(llm, LLM) or hasattr(llm, "call")
    assert "gpt-4o-mini" in str(llm.model)


def test_a_local_llm_url_needs_no_openai_key_and_a_remote_one_gets_none_invented(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from quantcrew.crew.crew import LOCAL_LLM_KEY

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings.crew.llm = "openai/my-model"
    for url in ("http://127.0.0.1:8000/v1", "http://localhost:11434/v1", "http://[::1]:8000/v1"):
        settings.crew.llm_base_url = url
        assert make_llm(settings, {}).api_key == LOCAL_LLM_KEY, url
    settings.crew.llm_base_url = "https://llm.example.com/v1"
    assert not make_llm(settings, {}).api_key  # a remote server's key must come from the user
    settings.crew.llm_api_key = SecretStr("sk-mine")
    assert make_llm(settings, {}).api_key == "sk-mine"


def test_build_regime_crew_has_one_task_for_the_analyst(settings: Settings) -> None:
    crew = build_regime_crew(settings, tools=[RegimeDetectionTool(settings=settings)],
                             llm=PlannerLLM(inputs=DEFAULT_INPUTS))
    assert len(crew.tasks) == 1 and len(crew.agents) == 1
    assert "{symbol}" in crew.tasks[0].description


def test_strategy_and_meta_crews_are_registered_with_their_tools(settings: Settings) -> None:
    from quantcrew.crew.crew import CREWS, build_crew

    assert {"regime", "risk", "strategy", "meta"} <= set(CREWS)
    expected = {"strategy": ("strategy_signals", "strategy_agent",
                             ["ensemble_signal", "strategy_signals", "execution_plan", "explain_signal"]),
                "meta": ("agent_selection", "meta_orchestrator", ["agent_selection"])}
    for kind, (task, agent, tools) in expected.items():
        spec = CREWS[kind]
        assert spec.task == task and spec.agent == agent
        assert required_inputs(task) - {"symbols"} <= set(spec.defaults), kind  # symbols: from symbol
        made = spec.make_tools(settings)
        assert [t.name for t in made] == tools
        crew = build_crew(kind, settings, tools=made, llm=PlannerLLM(inputs=spec.defaults))
        assert len(crew.tasks) == 1 and [t.name for t in crew.agents[0].tools] == tools
    assert CREWS["strategy"].defaults == {"symbol": "SP500", "lookback": 300}
    assert CREWS["meta"].defaults == {"symbol": "SP500", "regime": "auto"}
    assert required_inputs("agent_selection") == {"symbol", "symbols", "regime"}


def test_crew_default_inputs_match_tool_argument_names() -> None:
    # the offline planner fills tool arguments by name from the kickoff inputs
    from quantcrew.crew.crew import CREWS

    for kind in ("strategy", "meta"):
        spec = CREWS[kind]
        for cls in spec.tool_classes():
            props = cls.model_fields["args_schema"].default.model_json_schema()["properties"]
            assert set(spec.defaults) <= set(props), kind


def test_the_offline_planner_calls_every_strategy_tool_but_explain_signal_in_both_processes() -> None:
    from quantcrew.agents.factories import agent_config
    from quantcrew.crew.crew import CREWS, STRATEGY_PLANNED

    role = agent_config("strategy_agent")["role"].strip()  # a delegated (hierarchical) task has no name
    offered = [cls.model_fields["name"].default for cls in CREWS["strategy"].tool_classes()]
    for kind in ("strategy", "full"):
        planned = CREWS[kind].tool_plan[role]
        assert planned == list(STRATEGY_PLANNED) == [name for name in offered if name != "explain_signal"]
