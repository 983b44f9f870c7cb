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
