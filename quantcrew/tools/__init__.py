"""Agent-side tools and the ML client. Light: no torch, scikit-learn, hmmlearn or SB3.

Reuse in any CrewAI crew::

    from quantcrew.tools import RegimeDetectionTool, RiskMetricsTool
    tools = [RegimeDetectionTool(), RiskMetricsTool()]   # read QUANTCREW_CLIENT__URL etc.

Names resolve lazily, so ``import quantcrew.tools.client`` does not pay for importing
crewai (several seconds) when only the client is wanted.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AgentSelectionInput",
    "AgentSelectionTool",
    "AnomalyDetectionInput",
    "AnomalyDetectionTool",
    "AsyncMLClient",
    "ClusteringInput",
    "ClusteringTool",
    "FactorAnalysisInput",
    "FactorAnalysisTool",
    "MLClient",
    "MLClientError",
    "QuantTool",
    "RegimeDetectionInput",
    "RegimeDetectionTool",
    "RiskMetricsInput",
    "RiskMetricsTool",
    "StrategySignalInput",
    "StrategySignalTool",
    "EnsembleSignalInput",
    "EnsembleSignalTool",
    "ExecutionPlanInput",
    "ExecutionPlanTool",
    "ExplainSignalInput",
    "ExplainSignalTool",
    "ToolInputError",
    "ToolResult",
    "all_tools",
    "as_langchain_tools",
    "make_async_client",
    "make_client",
]

_WHERE = {
    "AgentSelectionInput": "quantcrew.tools.selection",
    "AgentSelectionTool": "quantcrew.tools.selection",
    "AnomalyDetectionInput": "quantcrew.tools.anomaly",
    "AnomalyDetectionTool": "quantcrew.tools.anomaly",
    "ClusteringInput": "quantcrew.tools.clustering",
    "ClusteringTool": "quantcrew.tools.clustering",
    "FactorAnalysisInput": "quantcrew.tools.factors",
    "FactorAnalysisTool": "quantcrew.tools.factors",
    "RiskMetricsInput": "quantcrew.tools.risk",
    "RiskMetricsTool": "quantcrew.tools.risk",
    "ToolInputError": "quantcrew.tools.arguments",
    "AsyncMLClient": "quantcrew.tools.client",
    "MLClient": "quantcrew.tools.client",
    "make_async_client": "quantcrew.tools.client",
    "make_client": "quantcrew.tools.client",
    "MLClientError": "quantcrew.tools.errors",
    "QuantTool": "quantcrew.tools.base",
    "ToolResult": "quantcrew.tools.base",
    "RegimeDetectionInput": "quantcrew.tools.regime",
    "RegimeDetectionTool": "quantcrew.tools.regime",
    "StrategySignalInput": "quantcrew.tools.strategy",
    "StrategySignalTool": "quantcrew.tools.strategy",
    "EnsembleSignalInput": "quantcrew.tools.ensemble",
    "EnsembleSignalTool": "quantcrew.tools.ensemble",
    "ExecutionPlanInput": "quantcrew.tools.execution",
    "ExecutionPlanTool": "quantcrew.tools.execution",
    "ExplainSignalInput": "quantcrew.tools.explain",
    "ExplainSignalTool": "quantcrew.tools.explain",
    "all_tools": "quantcrew.tools.langchain",
    "as_langchain_tools": "quantcrew.tools.langchain",
}

if TYPE_CHECKING:
    from quantcrew.tools.anomaly import AnomalyDetectionInput, AnomalyDetectionTool
    from quantcrew.tools.arguments import ToolInputError
    from quantcrew.tools.base import QuantTool, ToolResult
    from quantcrew.tools.client import AsyncMLClient, MLClient, make_async_client, make_client
    from quantcrew.tools.clustering import ClusteringInput, ClusteringTool
    from quantcrew.tools.ensemble import EnsembleSignalInput, EnsembleSignalTool
    from quantcrew.tools.errors import MLClientError
    from quantcrew.tools.execution import ExecutionPlanInput, ExecutionPlanTool
    from quantcrew.tools.explain import ExplainSignalInput, ExplainSignalTool
    from quantcrew.tools.factors import FactorAnalysisInput, FactorAnalysisTool
    from quantcrew.tools.langchain import all_tools, as_langchain_tools
    from quantcrew.tools.regime import RegimeDetectionInput, RegimeDetectionTool
    from quantcrew.tools.risk import RiskMetricsInput, RiskMetricsTool
    from quantcrew.tools.selection import AgentSelectionInput, AgentSelectionTool
    from quantcrew.tools.strategy import StrategySignalInput, StrategySignalTool


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'quantcrew.tools' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
