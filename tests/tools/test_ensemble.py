"""EnsembleSignalTool and ExecutionPlanTool against the real app: with deployed models, with gated ones (rules
answer by design), without any (degraded, with the command that trains them), server down."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings, load_settings
from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.ensemble import DeploymentRequest, EnsembleTrainRequest, EnsembleTrainResult
from quantcrew.ml_server.services.gate import ensemble_gate, execution_gate
from quantcrew.tools.client import AsyncMLClient, MLClient
from quantcrew.tools.ensemble import EnsembleSignalTool
from quantcrew.tools.execution import ExecutionPlanTool
from quantcrew.tools.fallbacks import ensemble_fallback, execution_fallback


@dataclass(frozen=True)
class _Trained:
    settings: Settings
    client: MLClient
    result: EnsembleTrainResult
    gates: dict[str, dict[str, Any]]
    """The failed verdicts stored with NASDAQ's ensemble and execution network, by family."""


def _store_gated(registry: ModelRegistry, symbol: str) -> dict[str, dict[str, Any]]:
    """Registry entries as the training job writes models that failed their gates (never deployed, so never
    loaded: a 409 is answered from the registry alone)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    ensemble = ensemble_gate(probabilities=np.full((200, 3), 1 / 3), labels=labels,
                             train_frequencies=np.array([0.3, 0.2, 0.5]), horizon=5, span_start="2017-01-03",
                             span_end="2018-12-31", rule="trend rules")
    returns = rng.normal(0.0005, 0.01, 120)
    execution = execution_gate(sized_returns=returns - 0.002, rule_returns=returns, span_start="2018-06-01",
                               span_end="2018-12-31", rule="volatility-target rule")
    gates = {"ensemble": ensemble.model_dump(mode="json"), "execution": execution.model_dump(mode="json")}
    for family, gate in gates.items():
        assert not gate["passed"]
        registry.save(family=family, name=f"{family}-{symbol}", method="stand-in", obj={}, fmt="json",
                      metadata={"symbol": symbol, "gate": gate}, stage="gated")
    return gates


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Trained]:
    """One app, once per module: a tiny ensemble and execution network trained on the S&P 500 and deployed by
    hand (900 bars and two epochs decide no gate reliably either way), and gated models for NASDAQ."""
    home = tmp_path_factory.mktemp("ensemble-tools-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(Path(home))
        for name in [n for n in os.environ if n.startswith("QUANTCREW_")]:
            mp.delenv(name)
        settings = load_settings(home=home)
    with TestClient(create_app(settings)) as tc:
        client = MLClient(tc)
        job = client.ensemble_train(EnsembleTrainRequest.model_validate({
            "data": to_payload_dict(load_sample("SP500").tail(900)), "symbol": "SP500", "members": 2, "window": 8,
            "hidden": 8, "heads": 2, "epochs": 2, "folds": 2, "mc_samples": 4}))
        done = client.wait_for_job(job.job_id, poll_s=0.05, timeout_s=120)
        assert done.status == "succeeded", done.error
        result = EnsembleTrainResult.model_validate(done.result)
        assert result.execution_model is not None
        for info in (result.model, result.execution_model):
            client.ensemble_deploy(DeploymentRequest(model_id=info.model_id, stage="full"))
        gates = _store_gated(tc.app.state.registry, "NASDAQ")  # type: ignore[attr-defined]
        yield _Trained(settings, client, result, gates)


def test_ensemble_signal_answers_from_the_deployed_ensemble(trained: _Trained) -> None:
    tool = EnsembleSignalTool(settings=trained.settings, client=trained.client)
    text = tool.run(symbol="SP500", lookback=200)
    assert "degraded: false" in text and trained.result.model.model_id in text
    result = tool.last_result
    assert result is not None and result.ok and not result.degraded
    assert result.data["served_by"]["model_id"] == trained.result.model.model_id
    assert result.data["signal"] in ("down", "flat", "up")
    assert result.data["confidence"] == max(result.data["probabilities"].values())
    assert result.data["as_of"].startswith("2018-12-31")


def test_ensemble_signal_without_a_trained_ensemble_falls_back_and_says_how_to_train(ml_client: MLClient,
                                                                                     settings: Settings) -> None:
    for symbol in ("SP500", "NASDAQ"):
        tool = EnsembleSignalTool(settings=settings, client=ml_client)
        text = tool.run(symbol=symbol, lookback=200)
        result = tool.last_result
        assert result is not None and result.ok and result.degraded and not result.gated
        assert f"quantcrew setup --symbols {symbol}" in (result.degraded_reason or "")
        assert "TREND RULES" in text and "degraded: true" in text
        expected = ensemble_fallback(load_sample(symbol).tail(200))
        assert result.data["signal"] == expected["signal"]
        assert result.data["probabilities"] == pytest.approx(expected["probabilities"])


def test_ensemble_signal_for_a_gated_ensemble_answers_with_the_trend_rules_marked_gated_not_degraded(
        trained: _Trained) -> None:
    tool = EnsembleSignalTool(settings=trained.settings, client=trained.client)
    text = tool.run(symbol="NASDAQ", lookback=200)
    result = tool.last_result
    assert result is not None and result.ok and result.gated and not result.degraded
    summary = trained.gates["ensemble"]["summary"]
    assert summary.startswith("failed: ") and summary in (result.gated_reason or "")
    assert "trend rules" in (result.gated_reason or "")
    assert "TREND RULES" in text and "gated" in text and "degraded: false" in text
    expected = ensemble_fallback(load_sample("NASDAQ").tail(200))
    assert result.data["signal"] == expected["signal"] and result.data["gated"] is True


def test_execution_plan_for_gated_models_answers_with_the_rules_marked_gated_not_degraded(
        trained: _Trained) -> None:
    tool = ExecutionPlanTool(settings=trained.settings, client=trained.client)
    text = tool.run(symbol="NASDAQ", lookback=200)  # signal auto: the ensemble is gated too
    result = tool.last_result
    assert result is not None and result.ok and result.gated and not result.degraded, text
    reason = result.gated_reason or ""
    assert trained.gates["ensemble"]["summary"] in reason and trained.gates["execution"]["summary"] in reason
    assert "volatility-target rule" in reason
    assert "VOLATILITY-TARGET RULE" in text and "gated" in text and "degraded: false" in text
    bars = load_sample("NASDAQ").tail(200)
    rules = ensemble_fallback(bars)
    assert result.data["strategic"]["signal"] == rules["signal"]
    assert result.data["size"] == execution_fallback(bars, rules["signal"], rules["confidence"])["size"]
    # the agent's own signal: only the network was gated
    tool.run(symbol="NASDAQ", lookback=200, signal="up", confidence=0.7)
    mine = tool.last_result
    assert mine is not None and mine.gated and not mine.degraded
    assert trained.gates["ensemble"]["summary"] not in (mine.gated_reason or "")


def test_execution_plan_without_a_network_is_degraded_and_names_the_symbols_setup(
        ml_client: MLClient, settings: Settings) -> None:
    tool = ExecutionPlanTool(settings=settings, client=ml_client)
    tool.run(symbol="NASDAQ", lookback=200, signal="up", confidence=0.7)
    result = tool.last_result
    assert result is not None and result.ok and result.degraded and not result.gated
    assert "quantcrew setup --symbols NASDAQ" in (result.degraded_reason or "")


def test_tools_fall_back_when_the_server_is_down(dead_server: Settings) -> None:
    signal = EnsembleSignalTool(settings=dead_server)
    signal.run(symbol="SP500", lookback=200)
    assert signal.last_result is not None and signal.last_result.degraded
    assert "unavailable" in (signal.last_result.degraded_reason or "")
    plan = ExecutionPlanTool(settings=dead_server)
    text = plan.run(symbol="SP500", lookback=200, signal="up", confidence=0.7)
    result = plan.last_result
    assert result is not None and result.ok and result.degraded and "VOLATILITY-TARGET RULE" in text
    size = result.data["size"]
    assert 0.0 <= size["lower"] <= size["mean"] <= size["upper"] <= 1.0
    assert result.data["direction"] == 1 and result.data["timing"] == "now"


def test_execution_plan_takes_the_ensemble_signal_and_returns_intervals(trained: _Trained) -> None:
    tool = ExecutionPlanTool(settings=trained.settings, client=trained.client)
    text = tool.run(symbol="SP500", lookback=200, decision_type="rebalance")
    result = tool.last_result
    assert result is not None and result.ok and not result.degraded, text
    plan = result.data["plan"]
    assert 0.0 <= plan["size"]["lower"] <= plan["size"]["mean"] <= plan["size"]["upper"] <= 1.0
    assert plan["timing"] in ("now", "wait") and result.data["samples"] == 20  # rebalance default
    assert result.data["strategic_source"].startswith("ensemble ensemble-SP500")
    assert trained.result.execution_model is not None
    assert result.data["provenance"]["model_id"] == trained.result.execution_model.model_id
    assert not result.gated and "degraded: false" in text
    again = ExecutionPlanTool(settings=trained.settings, client=trained.client)
    again.run(symbol="SP500", lookback=200, decision_type="rebalance")
    assert again.last_result is not None and again.last_result.data["plan"] == plan  # the same inputs, the same plan


async def test_arun_matches_run(trained: _Trained) -> None:
    sync = ExecutionPlanTool(settings=trained.settings, client=trained.client)
    sync.run(symbol="SP500", lookback=200, signal="down", confidence=0.8)
    app = create_app(trained.settings)  # a second app on the same registry sees the same models
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ml.test")
        async with AsyncMLClient(http) as client:
            tool = ExecutionPlanTool(settings=trained.settings, async_client=client)
            await tool.arun(symbol="SP500", lookback=200, signal="down", confidence=0.8)
            signal = EnsembleSignalTool(settings=trained.settings, async_client=client)
            text = await signal.arun(symbol="SP500", lookback=200)
    assert "degraded: false" in text
    assert tool.last_result is not None and sync.last_result is not None
    assert tool.last_result.data["plan"]["direction"] == sync.last_result.data["plan"]["direction"] == -1
    assert tool.last_result.data["strategic_source"] == "the agent"


def test_bad_arguments_are_reported_not_raised(settings: Settings) -> None:
    tool = ExecutionPlanTool(settings=settings)
    text = tool.run(symbol="SP500", decision_type="panic")
    assert "bad argument" in text and "entry" in text
    text = EnsembleSignalTool(settings=settings).run(symbol="SP500", method="bayes")
    assert "bad argument" in text and "mc_dropout" in text
