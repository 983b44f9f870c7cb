"""The risk manager crew against a real ML server (uvicorn on loopback) with the offline planner."""

from __future__ import annotations

import pytest

from quantcrew.config.settings import Settings
from quantcrew.crew.kickoff import run
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.server_process import LocalServer

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

_RISK_TOOLS = ["risk_metrics", "factor_analysis", "clustering", "anomaly_detection"]


def test_planner_risk_kickoff_calls_every_risk_tool(live_server: LocalServer, settings: Settings,
                                                    refused: list[str]) -> None:
    settings.client.url = live_server.url
    inputs = {"symbols": "SP500,NASDAQ,VIX", "weights": "0.5,0.3,0.2", "lookback": 500}
    outcome = run(inputs, settings, kind="risk")
    assert outcome.status == "succeeded" and not outcome.degraded
    # the planner asks for the four tools in one turn; CrewAI may run them concurrently
    assert sorted(r.tool for r in outcome.tool_results) == sorted(_RISK_TOOLS)
    [risk] = [r for r in outcome.tool_results if r.tool == "risk_metrics"]
    assert risk.arguments["weights"] == "0.5,0.3,0.2"
    assert risk.data["weights"] == pytest.approx([0.5, 0.3, 0.2])
    assert {e["method"] for e in risk.data["estimates"]} >= {"historical", "filtered_historical", "monte_carlo"}
    assert "SP500 50% / NASDAQ 30% / VIX 20%" in outcome.output
    assert "offline planner" in outcome.output
    stored = RunsStore(settings.runs_db).get_run(outcome.run_id)
    assert stored is not None and stored["kind"] == "risk"
    assert sorted(c["tool"] for c in stored["tool_calls"]) == sorted(_RISK_TOOLS)
    assert refused == []


def test_risk_kickoff_with_server_down_finishes_degraded(settings: Settings, refused: list[str]) -> None:
    from quantcrew.crew.server_process import free_port

    settings.client.url = f"http://127.0.0.1:{free_port()}"
    settings.client.retries = 0
    outcome = run({"symbols": "SP500,NASDAQ", "weights": "0.6,0.4", "lookback": 400}, settings, kind="risk")
    assert outcome.status == "degraded" and outcome.degraded
    assert all(r.degraded for r in outcome.tool_results)
    assert outcome.output.count("degraded: true") == 4
