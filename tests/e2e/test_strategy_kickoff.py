"""The strategy and meta crews against a real ML server (uvicorn on loopback) with the offline planner."""

from __future__ import annotations

import httpx
import pytest

from quantcrew.config.settings import Settings
from quantcrew.crew.kickoff import run
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.server_process import LocalServer
from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.schemas.ensemble import DeploymentRequest, EnsembleTrainRequest, EnsembleTrainResult
from quantcrew.ml_server.schemas.rl import RLTrainRequest, RLTrainResult
from quantcrew.tools.client import MLClient

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def aggressive_policy(own_server: LocalServer) -> str:
    """A tiny A2C policy for the aggressive agent on the live server; its model id."""
    with MLClient(httpx.Client(base_url=own_server.url, timeout=30.0)) as client:
        job = client.rl_train(RLTrainRequest.model_validate(
            {"data": to_payload_dict(load_sample("SP500").tail(400)), "symbol": "SP500", "agents": ["aggressive"],
             "algorithm": "a2c", "timesteps": 600, "regime_features": False, "n_envs": 2, "seeds": 1,
             "grid": {"reward_scale": [1.0]}}))
        done = client.wait_for_job(job.job_id, poll_s=0.05, timeout_s=90)
    assert done.status == "succeeded", done.error
    return RLTrainResult.model_validate(done.result).policies[0].model_id


@pytest.fixture(scope="module")
def ensemble(own_server: LocalServer) -> EnsembleTrainResult:
    """A tiny ensemble (and execution network) for SP500 on the live server."""
    with MLClient(httpx.Client(base_url=own_server.url, timeout=30.0)) as client:
        job = client.ensemble_train(EnsembleTrainRequest.model_validate({
            "data": to_payload_dict(load_sample("SP500").tail(900)), "symbol": "SP500", "members": 1, "window": 8,
            "hidden": 8, "heads": 2, "epochs": 1, "folds": 1, "mc_samples": 4}))
        done = client.wait_for_job(job.job_id, poll_s=0.05, timeout_s=120)
        assert done.status == "succeeded", done.error
        result = EnsembleTrainResult.model_validate(done.result)
        # a tiny ensemble usually fails its gate; a person may still deploy a version by hand, as here
        assert result.execution_model is not None
        for model_id in (result.model.model_id, result.execution_model.model_id):
            client.ensemble_deploy(DeploymentRequest(model_id=model_id, stage="full"))
    return result


_TOOLS = ["ensemble_signal", "strategy_signals", "execution_plan"]


def test_planner_strategy_kickoff_reports_ensemble_policy_and_execution(
        own_server: LocalServer, aggressive_policy: str, ensemble: EnsembleTrainResult, settings: Settings,
        refused: list[str]) -> None:
    settings.client.url = own_server.url
    outcome = run({"symbol": "SP500", "lookback": 300, "agents": "aggressive"}, settings, kind="strategy")
    assert outcome.status == "succeeded" and not outcome.degraded
    by_tool = {r.tool: r for r in outcome.tool_results}
    assert sorted(by_tool) == sorted(_TOOLS)
    result = by_tool["strategy_signals"]
    assert result.arguments["agents"] == "aggressive"
    [signal] = result.data["signals"]
    if signal.get("gated"):  # the 600-step policy failed its gate: its rule answers, by design, not degraded
        assert signal["gated_model_id"] == aggressive_policy and result.gated and not result.degraded
    else:
        assert signal["source"] == "rl_policy" and signal["model_id"] == aggressive_policy
    assert by_tool["ensemble_signal"].data["served_by"]["model_id"] == ensemble.model.model_id
    assert ensemble.execution_model is not None
    assert by_tool["execution_plan"].data["provenance"]["model_id"] == ensemble.execution_model.model_id
    for tool in _TOOLS:
        assert f"## {tool}" in outcome.output
    assert "offline planner" in outcome.output
    assert ensemble.model.model_id in outcome.output and "degraded: false" in outcome.output
    stored = RunsStore(settings.runs_db).get_run(outcome.run_id)
    assert stored is not None and stored["kind"] == "strategy"
    assert sorted(c["tool"] for c in stored["tool_calls"]) == sorted(_TOOLS)
    assert refused == []


def test_strategy_kickoff_with_default_inputs_marks_untrained_agents(own_server: LocalServer,
                                                                     aggressive_policy: str, settings: Settings,
                                                                     refused: list[str]) -> None:
    settings.client.url = own_server.url
    outcome = run({}, settings, kind="strategy")
    assert outcome.status == "degraded" and outcome.degraded
    [result] = [r for r in outcome.tool_results if r.tool == "strategy_signals"]
    assert "run `quantcrew setup --symbols SP500`" in outcome.output
    assert refused == []


def test_planner_meta_kickoff_selects_then_records_the_reward(own_server: LocalServer, settings: Settings,
                                                              refused: list[str]) -> None:
    settings.client.url = own_server.url
    chosen = run({"symbol": "SP500", "regime": "auto"}, settings, kind="meta")
    assert chosen.status == "succeeded" and not chosen.degraded
    [selection] = chosen.tool_results
    assert selection.tool == "agent_selection" and selection.data["regime_source"] == "server regime model"
    decision_id = selection.data["decision_id"]
    assert "## agent_selection" in chosen.output and decision_id in chosen.output
    # the same crew records the outcome when the kickoff inputs carry the decision id and the reward
    recorded = run({"decision_id": decision_id, "reward": 0.003}, settings, kind="meta")
    [reward] = recorded.tool_results
    assert reward.ok and reward.data["recorded"] is True and reward.data["agent"] == selection.data["agent"]
    assert f"Recorded reward +0.003 for decision {decision_id}" in recorded.output
    assert refused == []


def test_meta_kickoff_with_server_down_round_robins_and_says_so(settings: Settings, refused: list[str]) -> None:
    from quantcrew.crew.server_process import free_port

    settings.client.url = f"http://127.0.0.1:{free_port()}"
    settings.client.retries = 0
    outcome = run({"regime": "bull"}, settings, kind="meta")
    assert outcome.status == "degraded" and outcome.degraded
    [result] = outcome.tool_results
    assert result.data["agent"] == "conservative" and result.data["decision_id"] is None
    assert "round-robin choice, no learning" in outcome.output
