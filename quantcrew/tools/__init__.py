"""Agent-side tools and the ML client. Light: no torch, scikit-learn, hmmlearn or SB3.

Reuse in any CrewAI crew::

    from quantcrew.tools import RegimeDetectionTool
    tool = RegimeDetectionTool()          # reads QUANTCREW_CLIENT__URL etc.
"""

from quantcrew.tools.base import QuantTool, ToolResult
from quantcrew.tools.client import AsyncMLClient, MLClient, make_async_client, make_client
from quantcrew.tools.errors import MLClientError
from quantcrew.tools.regime import RegimeDetectionInput, RegimeDetectionTool

__all__ = [
    "AsyncMLClient",
    "MLClient",
    "MLClientError",
    "QuantTool",
    "RegimeDetectionInput",
    "RegimeDetectionTool",
    "ToolResult",
    "make_async_client",
    "make_client",
]
