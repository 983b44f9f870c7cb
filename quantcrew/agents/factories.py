"""One factory per agent role, reading crewAI YAML from config/agents.yaml.

Factories are plain functions: nothing is built at import time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import yaml
from crewai import Agent
from crewai.tools import BaseTool

from quantcrew.config.paths import AGENTS_YAML
from quantcrew.config.settings import Settings

__all__ = [
    "AGENT_FACTORIES",
    "agent_config",
    "make_meta_orchestrator",
    "make_regime_analyst",
    "make_risk_manager",
    "make_strategy_agent",
]


@lru_cache(maxsize=1)
def _agents_yaml() -> dict[str, dict[str, str]]:
    with AGENTS_YAML.open(encoding="utf-8") as fh:
        loaded: dict[str, dict[str, str]] = yaml.safe_load(fh)
    return loaded


def agent_config(role_key: str) -> dict[str, str]:
    """The YAML entry of one agent (role, goal, backstory), by its key."""
    config = _agents_yaml()
    if role_key not in config:
        raise KeyError(f"no agent '{role_key}' in {AGENTS_YAML}; defined: {sorted(config)}")
    return dict(config[role_key])


def _agent(key: str, settings: Settings, tools: list[BaseTool], llm: Any, *, max_iter: int) -> Agent:
    """The agent of ``key`` in agents.yaml with its tools and LLM; agents never delegate."""
    return Agent(config=agent_config(key), tools=tools, llm=llm, allow_delegation=False,
                 verbose=settings.crew.verbose, max_iter=max_iter)


def make_regime_analyst(settings: Settings, *, tools: list[BaseTool], llm: Any) -> Agent:
    """The regime analyst: detects the current regime through RegimeDetectionTool."""
    return _agent("regime_analyst", settings, tools, llm, max_iter=6)


def make_risk_manager(settings: Settings, *, tools: list[BaseTool], llm: Any) -> Agent:
    """The risk manager: VaR/CVaR, factors, asset groups and anomalies through the risk tools."""
    return _agent("risk_manager", settings, tools, llm, max_iter=10)


def make_strategy_agent(settings: Settings, *, tools: list[BaseTool], llm: Any) -> Agent:
    """The strategy agent: the RL policies' signals and their consensus through StrategySignalTool."""
    return _agent("strategy_agent", settings, tools, llm, max_iter=6)


def make_meta_orchestrator(settings: Settings, *, tools: list[BaseTool], llm: Any) -> Agent:
    """The meta-orchestrator: which agent to follow per regime, and its outcomes, through AgentSelectionTool."""
    return _agent("meta_orchestrator", settings, tools, llm, max_iter=6)


AGENT_FACTORIES = {
    "regime_analyst": make_regime_analyst,
    "risk_manager": make_risk_manager,
    "strategy_agent": make_strategy_agent,
    "meta_orchestrator": make_meta_orchestrator,
}
