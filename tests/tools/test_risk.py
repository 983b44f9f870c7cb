"""RiskMetricsTool against the real app, a dead server, and bad arguments."""

from __future__ import annotations

import pytest

from quantcrew.config.settings import Settings
from quantcrew.tools.client import MLClient
from quantcrew.tools.risk import RiskMetricsTool


def test_run_answers_var_by_every_method_from_server(settings: Settings, ml_client: MLClient) -> None:
    tool = RiskMetricsTool(settings=settings, client=ml_client)
    text = tool.run(symbols="SP500,NASDAQ", weights="0.6,0.4", lookback=600)
    assert "SP500 60% / NASDAQ 40%" in text and "degraded: false" in text
    result = tool.last_result
    assert result is not None and result.ok and not result.degraded
    methods = {(e["method"], e["level"]) for e in result.data["estimates"]}
    for method in ("historical", "parametric_normal", "parametric_t", "monte_carlo", "filtered_historical"):
        assert (method, 0.95) in methods and (method, 0.99) in methods
    for est in result.data["estimates"]:
        assert 0 < est["var"] <= est["cvar"] < 0.5
    assert result.data["n_observations"] == 600


def test_run_refuses_weights_that_do_not_sum_to_one(settings: Settings, ml_client: MLClient) -> None:
    tool = RiskMetricsTool(settings=settings, client=ml_client)
    text = tool.run(symbols="SP500,NASDAQ", weights="0.6,0.6", lookback=300)
    assert "sum to 1.2" in text and "normalize_weights" in text
    assert tool.last_result is not None and not tool.last_result.ok


def test_run_normalises_weights_only_when_asked(settings: Settings, ml_client: MLClient) -> None:
    tool = RiskMetricsTool(settings=settings, client=ml_client)
    tool.run(symbols="SP500,NASDAQ", weights="0.6,0.6", normalize_weights=True, lookback=300,
             var_methods="historical")
    assert tool.last_result is not None and tool.last_result.ok
    assert tool.last_result.data["weights"] == pytest.approx([0.5, 0.5])


def test_server_down_answers_historical_var_and_says_so(dead_server: Settings) -> None:
    tool = RiskMetricsTool(settings=dead_server)
    text = tool.run(symbols="SP500,NASDAQ", weights="0.6,0.4", lookback=500)
    assert "degraded: true" in text and "historical" in text
    result = tool.last_result
    assert result is not None and result.degraded and result.ok
    assert result.data["method_used"] == "fallback_historical"
    assert {e["level"] for e in result.data["estimates"]} == {0.95, 0.99}


def test_unknown_symbol_is_a_clear_answer_not_an_exception(settings: Settings, ml_client: MLClient) -> None:
    tool = RiskMetricsTool(settings=settings, client=ml_client)
    text = tool.run(symbols="SP500,NOPE", lookback=300)
    assert "NOPE" in text
    assert tool.last_result is not None and not tool.last_result.ok


async def test_arun_matches_run(settings: Settings) -> None:
    import httpx

    from quantcrew.ml_server.app import create_app
    from quantcrew.tools.client import AsyncMLClient

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        async with AsyncMLClient(http) as client:
            tool = RiskMetricsTool(settings=settings, async_client=client)
            text = await tool.arun(symbols="SP500,NASDAQ", weights="0.5,0.5", lookback=300,
                                   var_methods="historical,parametric_normal")
    assert "degraded: false" in text and "historical" in text
