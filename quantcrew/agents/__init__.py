"""Agent factories, one per role (see config/agents.yaml)."""

from quantcrew.agents.factories import (
    AGENT_FACTORIES,
    agent_config,
    make_meta_orchestrator,
    make_regime_analyst,
    make_risk_manager,
    make_strategy_agent,
)

__all__ = [
    "AGENT_FACTORIES",
    "agent_config",
    "make_meta_orchestrator",
    "make_regime_analyst",
    "make_risk_manager",
    "make_strategy_agent",
]
