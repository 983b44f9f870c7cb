"""quantcrew's tools as langchain-core tools, for LangChain / LangGraph agents.

Each one wraps a :class:`~quantcrew.tools.base.QuantTool` instance: the same arguments
schema, name and description, the same text answer (with its fallbacks and ``degraded``
flag), and the structured result still kept in the wrapped tool's ``last_result``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.tools import StructuredTool

from quantcrew.config.settings import Settings
from quantcrew.tools.base import QuantTool

__all__ = ["TOOL_CLASSES", "all_tools", "as_langchain_tools"]


def _classes() -> list[type[QuantTool]]:
    from quantcrew.tools.anomaly import AnomalyDetectionTool
    from quantcrew.tools.clustering import ClusteringTool
    from quantcrew.tools.ensemble import EnsembleSignalTool
    from quantcrew.tools.execution import ExecutionPlanTool
    from quantcrew.tools.explain import ExplainSignalTool
    from quantcrew.tools.factors import FactorAnalysisTool
    from quantcrew.tools.regime import RegimeDetectionTool
    from quantcrew.tools.risk import RiskMetricsTool
    from quantcrew.tools.selection import AgentSelectionTool
    from quantcrew.tools.strategy import StrategySignalTool

    return [RegimeDetectionTool, RiskMetricsTool, FactorAnalysisTool, ClusteringTool, AnomalyDetectionTool,
            StrategySignalTool, AgentSelectionTool, EnsembleSignalTool, ExecutionPlanTool, ExplainSignalTool]


TOOL_CLASSES: tuple[str, ...] = (
    "RegimeDetectionTool", "RiskMetricsTool", "FactorAnalysisTool", "ClusteringTool", "AnomalyDetectionTool",
    "StrategySignalTool", "AgentSelectionTool", "EnsembleSignalTool", "ExecutionPlanTool", "ExplainSignalTool",
)
"""Every tool quantcrew exports, by class name, in the order :func:`all_tools` builds them."""


def all_tools(settings: Settings | None = None, **kwargs: Any) -> list[QuantTool]:
    """One instance of every quantcrew tool, sharing ``settings`` and ``kwargs`` (``client``, ``on_result``)."""
    return [cls(settings=settings, **kwargs) for cls in _classes()]


def as_langchain_tools(tools: Sequence[QuantTool] | None = None, *, settings: Settings | None = None,
                       **kwargs: Any) -> list[StructuredTool]:
    """quantcrew's tools as langchain-core ``StructuredTool`` objects.

    Args:
        tools: The instances to wrap; default one of each (:func:`all_tools`).
        settings: Settings for the default instances.
        kwargs: Passed to the default instances (e.g. ``client=MLClient(...)``).
    """
    chosen = list(tools) if tools is not None else all_tools(settings, **kwargs)
    return [_wrap(t) for t in chosen]


def _wrap(tool: QuantTool) -> StructuredTool:
    def run(**arguments: Any) -> str:
        return str(tool.run(**arguments))

    async def arun(**arguments: Any) -> str:
        return str(await tool.arun(**arguments))

    return StructuredTool.from_function(func=run, coroutine=arun, name=tool.name, description=tool.description,
                                        args_schema=tool.args_schema, infer_schema=False)
