"""Crew assembly from config/tasks.yaml and the agent factories. No side effects at import."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import yaml
from crewai import LLM, Crew, Process, Task

from quantcrew.agents.factories import make_regime_analyst
from quantcrew.config.paths import TASKS_YAML
from quantcrew.config.settings import Settings
from quantcrew.crew.planner_llm import PlannerLLM
from quantcrew.tools.base import QuantTool

__all__ = ["DEFAULT_INPUTS", "build_regime_crew", "make_llm", "required_inputs", "task_config"]

DEFAULT_INPUTS: dict[str, Any] = {"symbol": "SP500", "lookback": 750}

_PLACEHOLDER = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


@lru_cache(maxsize=1)
def _tasks_yaml() -> dict[str, dict[str, str]]:
    with TASKS_YAML.open(encoding="utf-8") as fh:
        loaded: dict[str, dict[str, str]] = yaml.safe_load(fh)
    return loaded


def task_config(task_key: str) -> dict[str, str]:
    """The YAML entry of one task (description, expected_output, agent)."""
    config = _tasks_yaml()
    if task_key not in config:
        raise KeyError(f"no task '{task_key}' in {TASKS_YAML}; defined: {sorted(config)}")
    return dict(config[task_key])


def required_inputs(*task_keys: str) -> set[str]:
    """Every ``{placeholder}`` the given tasks (and their agents) need at kickoff."""
    from quantcrew.agents.factories import agent_config

    names: set[str] = set()
    for key in task_keys:
        cfg = task_config(key)
        texts = [cfg.get("description", ""), cfg.get("expected_output", "")]
        texts += list(agent_config(cfg["agent"]).values())
        for text in texts:
            names.update(_PLACEHOLDER.findall(text))
    return names


def make_llm(settings: Settings, inputs: dict[str, Any]) -> Any:
    """The crew's LLM: the offline planner by default, else any CrewAI LLM string."""
    name = settings.crew.llm
    if name == "planner":
        return PlannerLLM(inputs=inputs)
    kwargs: dict[str, Any] = {"model": name}
    if settings.crew.llm_base_url:
        kwargs["base_url"] = settings.crew.llm_base_url
    if settings.crew.llm_api_key is not None:
        kwargs["api_key"] = settings.crew.llm_api_key.get_secret_value()
    return LLM(**kwargs)


def build_regime_crew(settings: Settings, *, tools: list[QuantTool], llm: Any) -> Crew:
    """The regime analyst and its one task, run sequentially."""
    analyst = make_regime_analyst(settings, tools=list(tools), llm=llm)
    cfg = task_config("regime_analysis")
    task = Task(name="regime_analysis", description=cfg["description"], expected_output=cfg["expected_output"],
                agent=analyst)
    return Crew(agents=[analyst], tasks=[task], process=Process.sequential, verbose=settings.crew.verbose,
                memory=False)
