"""RegimeDetectionTool against the real app (TestClient), a dead server, and bad input."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app
from quantcrew.tools import MLClient, RegimeDetectionTool, ToolResult
from quantcrew.tools.client import make_client


def test_run_answers_from_server_and_keeps_structured_result(settings: Settings, ml_client: MLClient) -> None:
    seen: list[ToolResult] = []
    tool = RegimeDetectionTool(settings=settings, client=ml_client, on_result=seen.append)
    text = tool.run(symbol="SP500", lookback=300)
    assert "SP500 regime as of 2018-12-31" in text
    assert "degraded: false" in text
    result = tool.last_result
    assert result is not None and result.ok and not result.degraded
    assert seen == [result]
    assert result.data["current_label"] in {"bull", "bear", "sideways", "volatile"}
    assert len(result.data["labels"]) == 300
    assert result.data["data_hash"].startswith("sha256:")


def test_end_date_limits_data_to_that_day(settings: Settings, ml_client: MLClient) -> None:
    tool = RegimeDetectionTool(settings=settings, client=ml_client)
    text = tool.run(symbol="SP500", lookback=750, end_date="2008-12-31")
    assert "as of 2008-12-31" in text
    assert tool.last_result is not None
    assert tool.last_result.data["current_label"] in {"bear", "volatile"}


def test_server_down_answers_from_fallback_and_says_so(settings: Settings) -> None:
    from quantcrew.crew.server_process import free_port

    settings.client.url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings.client.retries = 0
    tool = RegimeDetectionTool(settings=settings)
    text = tool.run(symbol="SP500", lookback=300)
    assert "degraded: true" in text
    result = tool.last_result
    assert result is not None and result.degraded and result.ok
    assert result.degraded_reason is not None and "unavailable" in result.degraded_reason.lower()
    assert result.data["method_used"] == "fallback_rules"


def test_breaker_open_answers_from_fallback_without_calling(settings: Settings) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, json={"error": {"code": "not_ready", "message": "busy", "details": None}})

    settings.client.retries = 0
    settings.client.breaker_failures = 2
    client = make_client(settings.client, base_url="http://ml.test", transport=httpx.MockTransport(handler))
    tool = RegimeDetectionTool(settings=settings, client=client)
    for _ in range(4):
        assert "degraded: true" in tool.run(symbol="SP500", lookback=120)
    assert calls == 2  # the breaker opened after two faults


def test_rejected_request_is_reported_not_fallen_back(settings: Settings) -> None:
    settings.server.max_rows = 50
    with TestClient(create_app(settings)) as tc:
        tool = RegimeDetectionTool(settings=settings, client=MLClient(tc))
        text = tool.run(symbol="SP500", lookback=300)
    assert "refused" in text and "rows" in text
    assert tool.last_result is not None and not tool.last_result.ok and not tool.last_result.degraded


def test_unknown_symbol_is_reported_to_the_agent(settings: Settings, ml_client: MLClient) -> None:
    tool = RegimeDetectionTool(settings=settings, client=ml_client)
    text = tool.run(symbol="NOPE_NOT_A_SYMBOL")
    assert "cannot use the data" in text and "SP500" in text


def test_args_schema_rejects_nonsense_lookback(settings: Settings, ml_client: MLClient) -> None:
    tool = RegimeDetectionTool(settings=settings, client=ml_client)
    with pytest.raises(ValueError, match="lookback"):
        tool.run(symbol="SP500", lookback=5)


async def test_arun_matches_run(settings: Settings) -> None:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ml.test") as http:
            from quantcrew.tools import AsyncMLClient

            tool = RegimeDetectionTool(settings=settings, async_client=AsyncMLClient(http))
            text = await tool.arun(symbol="SP500", lookback=300)
    assert "SP500 regime as of 2018-12-31" in text and "degraded: false" in text


def test_no_server_configured_answers_degraded(settings: Settings) -> None:
    tool = RegimeDetectionTool(settings=settings)
    text = tool.run(symbol="SP500", lookback=200)
    assert "degraded: true" in text and "no ML server configured" in text


def test_tool_description_and_name_are_stable() -> None:
    tool = RegimeDetectionTool()
    assert tool.name == "regime_detection"
    assert "filtered" in tool.description
    props = tool.args_schema.model_json_schema()["properties"]
    assert set(props) == {"symbol", "lookback", "n_states", "end_date"}
    assert all(p.get("description") for p in props.values())


def test_a_falling_market_at_its_bottom_reads_bear_and_says_why(settings: Settings, ml_client: MLClient) -> None:
    tool = RegimeDetectionTool(settings=settings, client=ml_client)
    text = tool.run(symbol="NASDAQ", end_date="2002-10-09", n_states=3)
    assert tool.last_result is not None
    trend = tool.last_result.data["trend"]
    assert trend["bear_trend"] is True
    assert "NASDAQ regime as of 2002-10-09: BEAR" in text
    assert (f"read with the trend: on the days the model calls calm the market is {trend['calm_drawdown']:.0%} below "
            f"their 365-day high, {trend['calm_trailing_return']:+.0%} over the last quarter") in text
