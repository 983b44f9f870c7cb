"""A crew that is not ours (its own agent, task and LLM) uses two quantcrew tools against a live server."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from crewai import LLM

from quantcrew.config.settings import Settings
from quantcrew.crew.server_process import LocalServer
from quantcrew.tools import RegimeDetectionTool, RiskMetricsTool
from tests.support.offline import isolate_crewai
from tests.support.openai_stub import openai_stub

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "reuse_tools_in_your_crew.py"


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("reuse_tools_in_your_crew", _EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_foreign_crew_uses_regime_and_risk_tools(live_server: LocalServer, settings: Settings,
                                                 monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    refused = isolate_crewai(monkeypatch, tmp_path)
    settings.client.url = live_server.url
    regime, risk = RegimeDetectionTool(settings=settings), RiskMetricsTool(settings=settings)
    regime_args = {"symbol": "SP500", "lookback": 400}
    risk_args = {"symbols": "SP500,NASDAQ", "weights": "0.6,0.4", "lookback": 500}
    with openai_stub("regime_detection", regime_args, final_text="Desk call: hold the book.",
                     then=[("risk_metrics", risk_args)]) as stub:
        crew = _example().build_crew(LLM(model="openai/gpt-4o-mini", base_url=stub.base_url, api_key="k"),
                                     [regime, risk])
        output = str(crew.kickoff())
    offered = {t["function"]["name"] for t in stub.requests[0]["tools"]}
    assert {"regime_detection", "risk_metrics"} <= offered
    assert regime.last_result is not None and regime.last_result.ok and not regime.last_result.degraded
    assert risk.last_result is not None and risk.last_result.ok and not risk.last_result.degraded
    assert "Desk call: hold the book." in output
    assert "SP500 regime as of" in output and "VaR" in output  # both observations reached the LLM
    assert refused == []
