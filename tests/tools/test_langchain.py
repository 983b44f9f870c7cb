"""quantcrew's tools as langchain-core tools: every tool wrapped, and one invoked against the real app."""

from __future__ import annotations

from langchain_core.tools import BaseTool as LangChainTool

import quantcrew.tools as qt
from quantcrew.config.settings import Settings
from quantcrew.tools.client import MLClient
from quantcrew.tools.langchain import TOOL_CLASSES
from quantcrew.tools.regime import RegimeDetectionTool


def test_every_exported_tool_is_wrapped_with_its_name_and_schema(settings: Settings) -> None:
    wrapped = qt.as_langchain_tools(settings=settings)
    assert all(isinstance(t, LangChainTool) for t in wrapped)
    originals = qt.all_tools(settings)
    assert [type(t).__name__ for t in originals] == list(TOOL_CLASSES)
    assert all(name in qt.__all__ for name in TOOL_CLASSES)
    assert [t.name for t in wrapped] == [t.name for t in originals]
    for lc, ours in zip(wrapped, originals, strict=True):
        assert lc.args_schema is ours.args_schema and lc.description == ours.description


def test_invoking_a_wrapped_tool_runs_it_against_the_server(settings: Settings, ml_client: MLClient) -> None:
    regime = RegimeDetectionTool(settings=settings, client=ml_client)
    [tool] = qt.as_langchain_tools([regime])
    text = tool.invoke({"symbol": "SP500", "lookback": 300})
    assert "SP500 regime as of 2018-12-31" in text and "degraded: false" in text
    assert regime.last_result is not None and regime.last_result.ok


async def test_async_invoke_falls_back_when_the_server_is_down(dead_server: Settings) -> None:
    [tool] = qt.as_langchain_tools([RegimeDetectionTool(settings=dead_server)])
    text = await tool.ainvoke({"symbol": "SP500", "lookback": 300})
    assert "degraded: true" in text
