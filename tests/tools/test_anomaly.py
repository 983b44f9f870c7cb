"""AnomalyDetectionTool against the real app and a dead server."""

from __future__ import annotations

from quantcrew.config.settings import Settings
from quantcrew.tools.anomaly import AnomalyDetectionTool
from quantcrew.tools.client import MLClient


def test_finds_the_2008_crash_days_among_the_top(settings: Settings, ml_client: MLClient) -> None:
    tool = AnomalyDetectionTool(settings=settings, client=ml_client)
    text = tool.run(symbols="SP500", lookback=1000, end_date="2009-06-30", top_k=10)
    assert "SP500: latest bar" in text and "degraded: false" in text
    top = tool.last_result.data["symbols"]["SP500"]["top"] if tool.last_result else []
    assert any(p["timestamp"].startswith("2008-10") for p in top)


def test_several_symbols_answer_each(settings: Settings, ml_client: MLClient) -> None:
    tool = AnomalyDetectionTool(settings=settings, client=ml_client)
    text = tool.run(symbols="SP500,NASDAQ", lookback=400)
    assert "SP500:" in text and "NASDAQ:" in text


def test_server_down_answers_z_scores(dead_server: Settings) -> None:
    tool = AnomalyDetectionTool(settings=dead_server)
    text = tool.run(symbols="SP500", lookback=1000, end_date="2009-06-30")
    assert "degraded: true" in text
    data = tool.last_result.data["symbols"]["SP500"] if tool.last_result else {}
    assert data["method_used"] == "fallback_zscore" and data["top"]
