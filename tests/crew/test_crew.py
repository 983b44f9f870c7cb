"""Crew assembly: placeholders supplied, LLM selection, no side effects."""

from __future__ import annotations

from crewai import LLM

from quantcrew.config.settings import Settings
from quantcrew.crew.crew import DEFAULT_INPUTS, build_regime_crew, make_llm, required_inputs
from quantcrew.crew.planner_llm import PlannerLLM
from quantcrew.tools import RegimeDetectionTool


def test_default_inputs_supply_every_placeholder() -> None:
    assert required_inputs("regime_analysis") <= set(DEFAULT_INPUTS)
    assert "symbol" in required_inputs("regime_analysis")


def test_make_llm_defaults_to_offline_planner(settings: Settings) -> None:
    llm = make_llm(settings, {"symbol": "SP500"})
    assert isinstance(llm, PlannerLLM)


def test_make_llm_builds_crewai_llm_with_base_url(settings: Settings) -> None:
    settings.crew.llm = "openai/gpt-4o-mini"
    settings.crew.llm_base_url = "http://127.0.0.1:9/v1"
    llm = make_llm(settings, {})
    assert isinstance(llm, LLM) or hasattr(llm, "call")
    assert "gpt-4o-mini" in str(llm.model)


def test_build_regime_crew_has_one_task_for_the_analyst(settings: Settings) -> None:
    crew = build_regime_crew(settings, tools=[RegimeDetectionTool(settings=settings)],
                             llm=PlannerLLM(inputs=DEFAULT_INPUTS))
    assert len(crew.tasks) == 1 and len(crew.agents) == 1
    assert "{symbol}" in crew.tasks[0].description


def test_strategy_and_meta_crews_are_registered_with_their_tools(settings: Settings) -> None:
    from quantcrew.crew.crew import CREWS, build_crew

    assert {"regime", "risk", "strategy", "meta"} <= set(CREWS)
    expected = {"strategy": ("strategy_signals", "strategy_agent",
                             ["ensemble_signal", "strategy_signals", "execution_plan"]),
                "meta": ("agent_selection", "meta_orchestrator", ["agent_selection"])}
    for kind, (task, agent, tools) in expected.items():
        spec = CREWS[kind]
        assert spec.task == task and spec.agent == agent
        assert required_inputs(task) <= set(spec.defaults), kind
        made = spec.make_tools(settings)
        assert [t.name for t in made] == tools
        crew = build_crew(kind, settings, tools=made, llm=PlannerLLM(inputs=spec.defaults))
        assert len(crew.tasks) == 1 and [t.name for t in crew.agents[0].tools] == tools
    assert CREWS["strategy"].defaults == {"symbol": "SP500", "lookback": 300}
    assert CREWS["meta"].defaults == {"symbol": "SP500", "regime": "auto"}
    assert required_inputs("agent_selection") == {"symbol", "regime"}


def test_crew_default_inputs_match_tool_argument_names() -> None:
    # the offline planner fills tool arguments by name from the kickoff inputs
    from quantcrew.crew.crew import CREWS

    for kind in ("strategy", "meta"):
        spec = CREWS[kind]
        for cls in spec.tool_classes():
            props = cls.model_fields["args_schema"].default.model_json_schema()["properties"]
            assert set(spec.defaults) <= set(props), kind
