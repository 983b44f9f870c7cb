"""Whole crew runs against a real ML server: the offline planner and CrewAI's OpenAI provider."""

from __future__ import annotations

import pytest
from crewai import LLM

from quantcrew.config.settings import Settings
from quantcrew.crew.kickoff import run
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.server_process import LocalServer
from tests.support.openai_stub import openai_stub

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_planner_kickoff_reports_regime_from_server(live_server: LocalServer, settings: Settings,
                                                     refused: list[str]) -> None:
    settings.client.url = live_server.url
    outcome = run({"symbol": "NASDAQ", "lookback": 400}, settings, kind="regime")
    assert outcome.status == "succeeded"
    assert "NASDAQ regime as of" in outcome.output
    assert "offline planner" in outcome.output
    [result] = outcome.tool_results
    assert result.tool == "regime_detection" and not result.degraded
    assert result.arguments["symbol"] == "NASDAQ" and result.arguments["lookback"] == 400
    stored = RunsStore(settings.runs_db).get_run(outcome.run_id)
    assert stored is not None and stored["status"] == "succeeded"
    assert stored["tool_calls"][0]["data"]["data_hash"] == result.data["data_hash"]
    assert refused == []


def test_openai_provider_kickoff_calls_the_real_tool(live_server: LocalServer, settings: Settings,
                                                      refused: list[str]) -> None:
    settings.client.url = live_server.url
    args = {"symbol": "SP500", "lookback": 300, "end_date": "2008-11-20"}
    with openai_stub("regime_detection", args, final_text="Regime analyst: crisis conditions.") as stub:
        llm = LLM(model="openai/gpt-4o-mini", base_url=stub.base_url, api_key="test-key")
        outcome = run({"symbol": "SP500"}, settings, llm=llm, kind="regime")
    assert [t["function"]["name"] for t in stub.requests[0]["tools"]] == ["regime_detection"]
    [result] = outcome.tool_results
    assert result.arguments["end_date"] == "2008-11-20" and not result.degraded
    assert result.data["current_label"] in {"bear", "volatile"}
    assert "Regime analyst: crisis conditions." in outcome.output
    assert "SP500 regime as of 2008-11-20" in outcome.output  # the stub echoes tool results
    assert refused == []


def test_kickoff_with_server_down_finishes_degraded(settings: Settings, refused: list[str]) -> None:
    from quantcrew.crew.server_process import free_port

    settings.client.url = f"http://127.0.0.1:{free_port()}"
    settings.client.retries = 0
    outcome = run({"symbol": "SP500", "lookback": 300}, settings, kind="regime")
    assert outcome.status == "degraded" and outcome.degraded
    assert "degraded: true" in outcome.output
