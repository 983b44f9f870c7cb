"""Crew assembly from config/tasks.yaml and the agent factories. No side effects at import."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import yaml
from crewai import LLM, Crew, Process, Task
from crewai.tools import BaseTool
from pydantic import BaseModel

from quantcrew.agents.factories import AGENT_FACTORIES
from quantcrew.config.paths import TASKS_YAML
from quantcrew.config.settings import Settings
from quantcrew.crew.planner_llm import PlannerLLM
from quantcrew.tools.base import QuantTool

__all__ = [
    "CREWS",
    "DEFAULT_INPUTS",
    "FULL_DEFAULTS",
    "PROCESSES",
    "CrewSpec",
    "build_crew",
    "build_regime_crew",
    "build_risk_crew",
    "is_loopback_url",
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
    from quantcrew.tools.explain import ExplainSignalTool
    from quantcrew.tools.strategy import StrategySignalTool

    return [EnsembleSignalTool, StrategySignalTool, ExecutionPlanTool, ExplainSignalTool]


STRATEGY_PLANNED = ("ensemble_signal", "strategy_signals", "execution_plan")
"""The strategy agent's tools the offline planner calls: all but ``explain_signal``, which would add a server
explanation (seconds) per symbol to every run; a real LLM calls it when a signal needs justifying."""


def _strategy_plan() -> dict[str, list[str]]:
    """``tool_plan`` entry of the strategy agent, keyed by its role (a delegated task has no name)."""
    from quantcrew.agents.factories import agent_config

    return {agent_config("strategy_agent")["role"].strip(): list(STRATEGY_PLANNED)}


def _selection_tools() -> list[type[QuantTool]]:
    from quantcrew.tools.selection import AgentSelectionTool

    return [AgentSelectionTool]


@dataclass(frozen=True)
class CrewSpec:
    """One runnable crew: its tasks (config/tasks.yaml, in order), each agent's tools, default inputs.

    ``outputs`` maps a task to its ``output_pydantic`` view; ``tool_plan`` narrows which tools
    the offline planner calls per task (a task it does not name gets every tool offered).
    """

    kind: str
    tasks: tuple[str, ...]
    agent_tools: dict[str, Callable[[], list[type[QuantTool]]]]
    defaults: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, type[BaseModel]] = field(default_factory=dict)
    tool_plan: dict[str, list[str]] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """The first task."""
        return self.tasks[0]

    @property
    def agent(self) -> str:
        """The agent of the first task."""
        return task_config(self.task)["agent"]

    def delegation(self) -> dict[str, str]:
        """Task -> the role of the agent it names: whom a hierarchical manager delegates it to."""
        from quantcrew.agents.factories import agent_config

        return {t: agent_config(task_config(t)["agent"])["role"].strip() for t in self.tasks}

    @property
    def agents(self) -> list[str]:
        """Every agent of the crew, in task order, once each."""
        return list(dict.fromkeys(task_config(t)["agent"] for t in self.tasks))

    def tool_classes(self) -> list[type[QuantTool]]:
        """Every tool class of the crew's agents, in agent order."""
        return [cls for agent in self.agents for cls in self.agent_tools.get(agent, list)()]

    def make_tools(self, settings: Settings, **kwargs: Any) -> list[QuantTool]:
        """One instance of each tool, sharing ``kwargs`` (client, on_result)."""
        return [cls(settings=settings, **kwargs) for cls in self.tool_classes()]

    def make_agent_tools(self, settings: Settings, **kwargs: Any) -> dict[str, list[BaseTool]]:
        """Per agent, one instance of each of its tools, sharing ``kwargs`` (client, on_result)."""
        return {agent: [cls(settings=settings, **kwargs) for cls in self.agent_tools.get(agent, list)()]
                for agent in self.agents}


def _full_outputs() -> dict[str, type[BaseModel]]:
    from quantcrew.crew.decision import Decision
    from quantcrew.crew.views import RegimeView, RiskView, StrategyView

    return {"market_regimes": RegimeView, "portfolio_risk": RiskView, "strategy_review": StrategyView,
            "portfolio_decision": Decision}


def _full_risk_tools() -> list[type[QuantTool]]:
    from quantcrew.tools.anomaly import AnomalyDetectionTool
    from quantcrew.tools.risk import RiskMetricsTool

    return [RiskMetricsTool, AnomalyDetectionTool]


FULL_DEFAULTS: dict[str, Any] = {"symbols": "SP500,NASDAQ", "lookback": 750, "horizon_days": 1, "drawdown": 0.0}
"""Inputs of the full crew; ``weights`` defaults to equal weights over ``symbols``."""

CREWS: dict[str, CrewSpec] = {
    "full": CrewSpec(
        "full", ("market_regimes", "portfolio_risk", "strategy_review", "portfolio_decision"),
        {"regime_analyst": _regime_tools, "risk_manager": _full_risk_tools, "strategy_agent": _strategy_tools,
         "meta_orchestrator": _selection_tools},
        FULL_DEFAULTS, _full_outputs(),
        {"portfolio_decision": ["portfolio_decision"], **_strategy_plan()}),
    "regime": CrewSpec("regime", ("regime_analysis",), {"regime_analyst": _regime_tools},
                       {"symbol": "SP500", "lookback": 750}),
    "risk": CrewSpec("risk", ("risk_assessment",), {"risk_manager": _risk_tools},
                     {"symbols": "SP500,NASDAQ", "weights": "0.6,0.4", "lookback": 1000, "horizon_days": 1}),
    "strategy": CrewSpec("strategy", ("strategy_signals",), {"strategy_agent": _strategy_tools},
                         {"symbol": "SP500", "lookback": 300}, tool_plan=_strategy_plan()),
    "meta": CrewSpec("meta", ("agent_selection",), {"meta_orchestrator": _selection_tools},
                     {"symbol": "SP500", "regime": "auto"}),
}
"""The crews ``quantcrew run`` / ``quantcrew risk`` and the scheduler can start, by kind."""

DEFAULT_INPUTS: dict[str, Any] = CREWS["regime"].defaults
PROCESSES = ("sequential", "hierarchical")

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


def make_llm(settings: Settings, inputs: dict[str, Any], *, tool_plan: dict[str, list[str]] | None = None,
             structurer: Callable[[type[BaseModel]], BaseModel | None] | None = None,
             delegation: dict[str, str] | None = None) -> Any:
    """The crew's LLM: the offline planner by default, else any CrewAI LLM string.

    ``tool_plan`` and ``structurer`` are the planner's (see :class:`PlannerLLM`); a real LLM
    chooses its own tools and writes its own structured output.
    """
    name = settings.crew.llm
    if name == "planner":
        return PlannerLLM(inputs=inputs, tool_plan=tool_plan or None, structurer=structurer, delegation=delegation)
    kwargs: dict[str, Any] = {"model": name}
    base_url = settings.crew.llm_base_url
    if base_url:
        kwargs["base_url"] = base_url
    if settings.crew.llm_api_key is not None:
        kwargs["api_key"] = settings.crew.llm_api_key.get_secret_value()
    elif base_url and is_loopback_url(base_url):
        # a local OpenAI-compatible server (llama.cpp, vLLM, Ollama) takes no key, but the OpenAI client
        # refuses to start without one: a placeholder, never sent anywhere but to that loopback server
        kwargs["api_key"] = LOCAL_LLM_KEY
    return LLM(**kwargs)


LOCAL_LLM_KEY = "no-key-needed-for-a-local-server"
"""The API key given to an LLM on a loopback base URL when ``crew.llm_api_key`` is not set."""


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    import ipaddress
    from urllib.parse import urlsplit

    host = (urlsplit(url if "//" in url else f"//{url}").hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_crew(kind: str, settings: Settings, *, tools: list[QuantTool] | dict[str, list[BaseTool]], llm: Any,
               process: str = "sequential", converter_cls: type[Any] | None = None) -> Crew:
    """The crew of ``kind`` (a key of :data:`CREWS`): its agents with their tools and ``llm``, its tasks.

    Args:
        kind: Which crew.
        settings: The settings tree.
        tools: Per agent key, its tools; a plain list is the tools of a one-agent crew.
        llm: The LLM of every agent (the offline planner or any CrewAI LLM).
        process: ``sequential`` (tasks in order, each agent doing its own) or ``hierarchical``
            (the meta-orchestrator manages and delegates each task to the agent it names; it
            holds no tools itself, as CrewAI requires of a manager).
        converter_cls: CrewAI ``Converter`` class of the tasks with an ``output_pydantic``
            (``quantcrew.crew.converter.view_converter``); CrewAI's own when omitted.
    """
    if kind not in CREWS:
        raise KeyError(f"no crew '{kind}'; defined: {sorted(CREWS)}")
    if process not in PROCESSES:
        raise ValueError(f"process must be one of {list(PROCESSES)}, got {process!r}")
    spec = CREWS[kind]
    by_agent = tools if isinstance(tools, dict) else {spec.agent: list(tools)}
    hierarchical = process == "hierarchical"
    manager_key = "meta_orchestrator"
    agents = {}
    for key in spec.agents:
        agent_tools = list(by_agent.get(key, []))
        if hierarchical and key == manager_key:
            continue
        agents[key] = AGENT_FACTORIES[key](settings, tools=agent_tools, llm=llm)
    manager = None
    if hierarchical:
        manager = AGENT_FACTORIES[manager_key](settings, tools=[], llm=llm)
        manager.allow_delegation = True
        if manager_key in spec.agents:  # its tools go to a worker of the same role, which the manager delegates to
            agents[manager_key] = AGENT_FACTORIES[manager_key](settings, tools=list(by_agent.get(manager_key, [])),
                                                               llm=llm)
    tasks = []
    for key in spec.tasks:
        cfg = task_config(key)
        tasks.append(Task(name=key, description=cfg["description"], expected_output=cfg["expected_output"],
                          agent=None if hierarchical else agents[cfg["agent"]],
                          output_pydantic=spec.outputs.get(key),
                          converter_cls=converter_cls if key in spec.outputs else None))
    if hierarchical:
        return Crew(agents=list(agents.values()), tasks=tasks, process=Process.hierarchical, manager_agent=manager,
                    verbose=settings.crew.verbose, memory=False)
    return Crew(agents=list(agents.values()), tasks=tasks, process=Process.sequential, verbose=settings.crew.verbose,
                memory=False)


def build_regime_crew(settings: Settings, *, tools: list[QuantTool], llm: Any) -> Crew:
    """The regime analyst and its one task, run sequentially."""
    return build_crew("regime", settings, tools=tools, llm=llm)


def build_risk_crew(settings: Settings, *, tools: list[QuantTool], llm: Any) -> Crew:
    """The risk manager with the risk, factor, clustering and anomaly tools, one task."""
    return build_crew("risk", settings, tools=tools, llm=llm)
