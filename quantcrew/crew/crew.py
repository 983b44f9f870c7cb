"""Crew assembly from config/tasks.yaml and the agent factories. No side effects at import."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml
from crewai import LLM, Crew, Process, Task

from quantcrew.agents.factories import AGENT_FACTORIES
from quantcrew.config.paths import TASKS_YAML
from quantcrew.config.settings import Settings
from quantcrew.crew.planner_llm import PlannerLLM
from quantcrew.tools.base import QuantTool

__all__ = [
    "CREWS",
    "DEFAULT_INPUTS",
    "CrewSpec",
    "build_crew",
    "build_regime_crew",
    "build_risk_crew",
    "make_llm",
    "required_inputs",
    "task_config",
]


def _regime_tools() -> list[type[QuantTool]]:
    from quantcrew.tools.regime import RegimeDetectionTool

    return [RegimeDetectionTool]


def _risk_tools() -> list[type[QuantTool]]:
    from quantcrew.tools.anomaly import AnomalyDetectionTool
    from quantcrew.tools.clustering import ClusteringTool
    from quantcrew.tools.factors import FactorAnalysisTool
    from quantcrew.tools.risk import RiskMetricsTool

    return [RiskMetricsTool, FactorAnalysisTool, ClusteringTool, AnomalyDetectionTool]


def _strategy_tools() -> list[type[QuantTool]]:
    from quantcrew.tools.ensemble import EnsembleSignalTool
    from quantcrew.tools.execution import ExecutionPlanTool
    from quantcrew.tools.strategy import StrategySignalTool

    return [EnsembleSignalTool, StrategySignalTool, ExecutionPlanTool]


def _selection_tools() -> list[type[QuantTool]]:
    from quantcrew.tools.selection import AgentSelectionTool

    return [AgentSelectionTool]


@dataclass(frozen=True)
class CrewSpec:
    """One runnable crew: its task (config/tasks.yaml), whose agent it names, its tools and default inputs."""

    kind: str
    task: str
    tool_classes: Callable[[], list[type[QuantTool]]]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def agent(self) -> str:
        return task_config(self.task)["agent"]

    def make_tools(self, settings: Settings, **kwargs: Any) -> list[QuantTool]:
        """One instance of each tool, sharing ``kwargs`` (client, on_result)."""
        return [cls(settings=settings, **kwargs) for cls in self.tool_classes()]


CREWS: dict[str, CrewSpec] = {
    "regime": CrewSpec("regime", "regime_analysis", _regime_tools, {"symbol": "SP500", "lookback": 750}),
    "risk": CrewSpec("risk", "risk_assessment", _risk_tools,
                     {"symbols": "SP500,NASDAQ", "weights": "0.6,0.4", "lookback": 1000, "horizon_days": 1}),
    "strategy": CrewSpec("strategy", "strategy_signals", _strategy_tools, {"symbol": "SP500", "lookback": 300}),
    "meta": CrewSpec("meta", "agent_selection", _selection_tools, {"symbol": "SP500", "regime": "auto"}),
}
"""The crews ``quantcrew run`` / ``quantcrew risk`` and the scheduler can start, by kind."""

DEFAULT_INPUTS: dict[str, Any] = CREWS["regime"].defaults

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


def build_crew(kind: str, settings: Settings, *, tools: list[QuantTool], llm: Any) -> Crew:
    """The crew of ``kind`` (a key of :data:`CREWS`): its agent with ``tools`` and ``llm``, one task."""
    if kind not in CREWS:
        raise KeyError(f"no crew '{kind}'; defined: {sorted(CREWS)}")
    spec = CREWS[kind]
    cfg = task_config(spec.task)
    agent = AGENT_FACTORIES[cfg["agent"]](settings, tools=list(tools), llm=llm)
    task = Task(name=spec.task, description=cfg["description"], expected_output=cfg["expected_output"], agent=agent)
    return Crew(agents=[agent], tasks=[task], process=Process.sequential, verbose=settings.crew.verbose,
                memory=False)


def build_regime_crew(settings: Settings, *, tools: list[QuantTool], llm: Any) -> Crew:
    """The regime analyst and its one task, run sequentially."""
    return build_crew("regime", settings, tools=tools, llm=llm)


def build_risk_crew(settings: Settings, *, tools: list[QuantTool], llm: Any) -> Crew:
    """The risk manager with the risk, factor, clustering and anomaly tools, one task."""
    return build_crew("risk", settings, tools=tools, llm=llm)
