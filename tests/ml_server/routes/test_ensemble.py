"""Ensemble and execution routes over HTTP: train as a job, quality gates, predict with uncertainty, deployment
stages, deterministic plans, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import load_settings
from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.ensemble import (
    DeploymentInfo,
    EnsemblePredictResponse,
    EnsembleTrainResult,
    ShadowLog,
)
from quantcrew.ml_server.schemas.execution import ExecutionResponse
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES, WARMUP, build_features
from quantcrew.ml_server.services.ensemble.model import EnsembleSpec, pack_state
from quantcrew.ml_server.services.ensemble.nets import NetConfig, build_net
from quantcrew.ml_server.services.execution.fit import ExecTrainConfig
from quantcrew.ml_server.services.execution.inputs import EXECUTION_INPUTS
from quantcrew.ml_server.services.execution.model import ExecutionModel
from quantcrew.ml_server.services.execution.net import ExecutionConfig
from quantcrew.ml_server.services.gate import execution_gate
from tests.support.jobs import wait_job
from tests.support.replies import assert_finite, invalid_input

TINY = {"members": 2, "window": 8, "hidden": 8, "heads": 2, "epochs": 8, "learning_rate": 0.01, "folds": 2,
        "batch_size": 128, "mc_samples": 4, "symbol": "SYN"}
"""Small enough to train in seconds; on :func:`_cycles` bars that is enough for the ensemble to pass its gate."""


def _wait(client: TestClient, job_id: str, timeout_s: float = 120.0) -> JobInfo:
    return wait_job(client, job_id, timeout_s)


def _cycles(n: int = 700, *, period: int = 40, amplitude: float = 0.08, noise: float = 0.002,
            seed: int = 0) -> dict[str, Any]:
    """Daily bars whose log price swings in a slow sine with a little noise: the next move is learnable."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    close = 100.0 * np.exp(amplitude * np.sin(2 * np.pi * t / period) + 2e-4 * t + np.cumsum(rng.normal(0, noise, n)))
    open_ = np.r_[close[0], close[:-1]]
    days = np.datetime64("2010-01-04") + np.arange(n).astype("timedelta64[D]")
    return {"timestamps": [f"{d}T00:00:00" for d in days], "open": open_.tolist(),
            "high": (np.maximum(open_, close) * 1.002).tolist(), "low": (np.minimum(open_, close) * 0.998).tolist(),
            "close": close.tolist(), "volume": rng.uniform(1e6, 2e6, n).tolist()}


@pytest.fixture(scope="module")
def bars() -> dict[str, Any]:
    return _cycles()


def _train(client: TestClient, body: dict[str, Any]) -> EnsembleTrainResult:
    resp = client.post("/v1/ensemble/train", json=body)
    assert resp.status_code == 202, resp.text
    job = _wait(client, resp.json()["job_id"])
    assert job.status == "succeeded", job.error
    return EnsembleTrainResult.model_validate(job.result)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, bars: dict[str, Any]) -> Iterator[tuple[TestClient, Any]]:
    """One app and one trained ensemble (with its execution network), both past their gates, for the module."""
    settings = load_settings(home=tmp_path_factory.mktemp("ensemble-home"))
    with TestClient(create_app(settings)) as client:
        yield client, _train(client, {"data": bars, **TINY})


@pytest.fixture(scope="module")
def rejected(served: tuple[TestClient, Any]) -> EnsembleTrainResult:
    """An ensemble trained on regime-switching noise for 'RGM', briefly: it fails its gate."""
    client, _ = served
    noise = to_payload_dict(generate_regime_market(700, seed=11).bars)
    return _train(client, {"data": noise, **TINY, "epochs": 2, "learning_rate": 1e-3, "symbol": "RGM"})


def _recent(bars: dict[str, Any], n: int) -> dict[str, Any]:
    return {k: (v[-n:] if isinstance(v, list) else v) for k, v in bars.items()}


def test_train_job_reports_folds_calibration_and_stores_both_models(served: tuple[TestClient, Any]) -> None:
    client, result = served
    assert len(result.folds) == 2
    assert {r.method for r in result.out_of_sample} >= {"ensemble", "mc_dropout", "ensemble:lstm",
                                                         "mc_dropout:transformer"}
    for r in result.out_of_sample:
        assert 0.0 <= r.ece <= 1.0 and r.nll > 0 and 0.0 <= r.accuracy <= 1.0
    # walk-forward: every fold is tested strictly after the bars it was trained on
    for f in result.folds:
        assert f.train_end < f.test_start
    assert result.model.family == "ensemble"
    assert result.execution_model is not None and result.execution_model.family == "execution"
    assert abs(sum(result.class_balance.values()) - 1.0) < 1e-9
    assert client.get(f"/v1/models/{result.model.model_id}").json()["sha256"] == result.model.sha256


def _stored(client: TestClient, model_id: str) -> dict[str, Any]:
    resp = client.get(f"/v1/models/{model_id}")
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_an_ensemble_that_passes_its_gate_is_deployed_with_the_verdict_recorded(
        served: tuple[TestClient, Any]) -> None:
    client, result = served
    assert result.gate is not None and result.gate.passed and result.gate.gate == "ensemble"
    assert result.gate.p_value is not None and result.gate.p_value < 0.05
    assert result.gate.span_start == result.folds[0].test_start and result.gate.span_end == result.folds[-1].test_end
    assert result.gate.n == sum(f.n_test for f in result.folds)
    assert result.deployment is not None and result.deployment.stage == "full"
    assert result.deployment.name == "ensemble-SYN" and result.deployment.model_id == result.model.model_id
    stored = _stored(client, result.model.model_id)
    assert stored["metadata"]["gate"] == result.gate.model_dump(mode="json") and stored["stage"] == "full"


def test_an_ensemble_that_fails_its_gate_is_stored_with_the_verdict_and_not_deployed(
        served: tuple[TestClient, Any], rejected: EnsembleTrainResult) -> None:
    client, _ = served
    assert rejected.gate is not None and not rejected.gate.passed and rejected.deployment is None
    assert rejected.gate.summary.startswith("failed: ") and rejected.gate.rule is not None
    stored = _stored(client, rejected.model.model_id)
    assert stored["metadata"]["gate"] == rejected.gate.model_dump(mode="json") and stored["stage"] == "gated"
    assert client.get("/v1/ensemble/deployments", params={"name": "ensemble-RGM"}).json()["deployments"] == []


def test_an_execution_network_is_deployed_exactly_when_it_passes_its_gate(
        served: tuple[TestClient, Any], rejected: EnsembleTrainResult) -> None:
    # on a few hundred bars the network and the rule sizing are close, so either verdict may come: both
    # trainings are checked for the same rule (the verdict itself is the gate module's to test)
    client, result = served
    for trained, symbol in ((result, "SYN"), (rejected, "RGM")):
        verdict, info = trained.execution_gate, trained.execution_model
        assert verdict is not None and info is not None and verdict.gate == "execution"
        assert verdict.interval is not None and verdict.n > 0 and verdict.rule is not None
        stored = _stored(client, info.model_id)
        assert stored["metadata"]["gate"] == verdict.model_dump(mode="json")
        deployed = client.get("/v1/ensemble/deployments", params={"name": f"execution-{symbol}"}).json()
        if verdict.passed:
            assert trained.execution_deployment is not None and trained.execution_deployment.stage == "full"
            assert [d["model_id"] for d in deployed["deployments"]] == [info.model_id]
            assert stored["stage"] == "full"
        else:
            assert trained.execution_deployment is None and deployed["deployments"] == []
            assert stored["stage"] == "gated"


def _gated_network(client: TestClient, symbol: str) -> tuple[str, dict[str, Any]]:
    """An execution network stored for ``symbol`` as the training job stores one that failed its gate."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, len(EXECUTION_INPUTS)))
    x[:, 0] = rng.choice([-1.0, 1.0], 200)
    net = ExecutionModel(ExecutionConfig(hidden=(8,)), train=ExecTrainConfig(epochs=2)).fit(
        x, rng.uniform(0, 1, 200), (x[:, 5] > 0).astype(np.int64))
    returns = rng.normal(0.0005, 0.01, 120)
    verdict = execution_gate(sized_returns=returns - 0.002, rule_returns=returns, span_start="2018-01-02",
                             span_end="2018-06-29", rule="volatility-target rule").model_dump(mode="json")
    registry: ModelRegistry = client.app.state.registry  # type: ignore[attr-defined]
    info = adapter.store(registry, net, name=f"execution-{symbol}", metadata={"symbol": symbol, "gate": verdict},
                         stage="gated")
    return info.model_id, verdict


def test_a_gated_symbol_answers_409_model_gated_until_a_version_is_deployed_by_hand(
        served: tuple[TestClient, Any], rejected: EnsembleTrainResult, bars: dict[str, Any]) -> None:
    client, _ = served
    network_id, network_gate = _gated_network(client, "GTD")
    assert rejected.gate is not None
    predict = {"data": _recent(bars, 120), "symbol": "RGM"}
    plan = {"signals": [{"signal": "up", "confidence": 0.6}], "data": _recent(bars, 100), "symbol": "GTD"}
    for path, body, model_id, verdict, symbol in (
            ("/v1/ensemble/predict", predict, rejected.model.model_id, rejected.gate.model_dump(mode="json"), "RGM"),
            ("/v1/execution/plan", plan, network_id, network_gate, "GTD")):
        resp = client.post(path, json=body)
        assert resp.status_code == 409, resp.text
        error = resp.json()["error"]
        assert error["code"] == "model_gated" and model_id in error["message"] and "failed" in error["message"]
        assert error["details"]["model_id"] == model_id and error["details"]["symbol"] == symbol
        assert error["details"]["gate"] == verdict
    # a person may overrule a gate: the version deployed by hand answers
    for model_id in (rejected.model.model_id, network_id):
        deployed = client.post("/v1/ensemble/deployments", json={"model_id": model_id, "stage": "full"})
        assert deployed.status_code == 200, deployed.text
    assert client.post("/v1/ensemble/predict", json=predict).json()["model_id"] == rejected.model.model_id
    assert client.post("/v1/execution/plan", json=plan).json()["model_id"] == network_id


def test_the_same_inputs_get_the_same_plan_without_a_seed(served: tuple[TestClient, Any],
                                                          bars: dict[str, Any]) -> None:
    client, result = served
    assert result.execution_model is not None
    body = {"signals": [{"signal": "up", "confidence": 0.7}, {"signal": "down", "confidence": 0.5}],
            "data": _recent(bars, 100), "model_id": result.execution_model.model_id}
    first, again = (client.post("/v1/execution/plan", json=body).json() for _ in range(2))
    assert first["plans"] == again["plans"] and first["seed"] == again["seed"] is not None
    assert first["plans"][0]["size"]["std"] > 0  # the draws differ; the same draws come back
    longer = client.post("/v1/execution/plan", json={**body, "data": _recent(bars, 101)}).json()
    assert longer["plans"] == first["plans"]  # the same bars up to the decisions: the same inputs, the same plan
    bolder = [{"signal": "up", "confidence": 0.8}, body["signals"][1]]
    assert client.post("/v1/execution/plan", json={**body, "signals": bolder}).json()["seed"] != first["seed"]


def test_predict_returns_calibrated_signal_with_uncertainty(served: tuple[TestClient, Any],
                                                            bars: dict[str, Any]) -> None:
    client, result = served
    resp = client.post("/v1/ensemble/predict", json={"data": _recent(bars, 200), "symbol": "SYN", "last": 3})
    assert resp.status_code == 200, resp.text
    assert_finite(resp.json())
    reply = EnsemblePredictResponse.model_validate(resp.json())
    assert reply.served_by.model_id == result.model.model_id and reply.served_by.variant == "full"
    assert reply.method_used == "ensemble" and reply.samples is None
    assert len(reply.points) == 3 and reply.points[-1].signal == reply.signal
    assert abs(sum(reply.probabilities.values()) - 1.0) < 1e-6
    assert reply.confidence == max(reply.probabilities.values())
    for metric in ("agreement_score", "consensus_strength", "divergence_metric", "predictive_entropy"):
        assert 0.0 <= getattr(reply, metric) <= 1.0
    assert {s.source for s in reply.sources} == {"lstm", "transformer"}
    assert abs(sum(s.weight for s in reply.sources) - 1.0) < 1e-6


def test_predict_from_features_equals_predict_from_bars(served: tuple[TestClient, Any], bars: dict[str, Any]) -> None:
    client, _ = served
    recent = _recent(bars, 120)
    by_bars = client.post("/v1/ensemble/predict", json={"data": recent, "symbol": "SYN"}).json()
    o, h, lo, c, v = (np.asarray(recent[k], dtype=float) for k in ("open", "high", "low", "close", "volume"))
    feats = build_features(o, h, lo, c, v)[WARMUP:]
    by_feats = client.post("/v1/ensemble/predict", json={
        "features": {"columns": list(FEATURE_NAMES), "values": feats.tolist()}, "symbol": "SYN"}).json()
    assert by_feats["probabilities"] == pytest.approx(by_bars["probabilities"], abs=1e-6)


def test_mc_dropout_method_uses_samples_and_a_seed_reproduces(served: tuple[TestClient, Any],
                                                              bars: dict[str, Any]) -> None:
    client, _ = served
    body = {"data": _recent(bars, 120), "symbol": "SYN", "method": "mc_dropout", "samples": 16, "seed": 3}
    first = client.post("/v1/ensemble/predict", json=body)
    assert first.status_code == 200, first.text
    again = client.post("/v1/ensemble/predict", json=body).json()
    assert first.json()["probabilities"] == again["probabilities"]
    assert first.json()["samples"] == 16 and first.json()["method_used"] == "mc_dropout"


def test_canary_answers_its_share_of_keys_stickily_and_shadow_is_logged(
        served: tuple[TestClient, Any], bars: dict[str, Any]) -> None:
    client, result = served
    resp = client.post("/v1/ensemble/train", json={"data": bars, **TINY, "seed": 1, "execution": False,
                                                   "stage": "canary", "share": 0.5})
    canary = EnsembleTrainResult.model_validate(_wait(client, resp.json()["job_id"]).result)
    assert canary.deployment is not None and canary.deployment.stage == "canary"
    assert canary.model.version == result.model.version + 1
    recent = _recent(bars, 120)
    answered = {}
    for k in range(24):
        body = {"data": recent, "symbol": "SYN", "request_key": f"client-{k}"}
        first = client.post("/v1/ensemble/predict", json=body).json()
        again = client.post("/v1/ensemble/predict", json=body).json()
        assert first["served_by"]["model_id"] == again["served_by"]["model_id"]  # sticky
        answered[k] = first["served_by"]["variant"]
    assert set(answered.values()) == {"full", "canary"}
    # demote the canary to shadow: it no longer answers, but runs and is logged
    shadow = client.post("/v1/ensemble/deployments", json={"model_id": canary.model.model_id, "stage": "shadow"})
    assert DeploymentInfo.model_validate(shadow.json()).stage == "shadow"
    reply = client.post("/v1/ensemble/predict", json={"data": recent, "symbol": "SYN", "request_key": "x"}).json()
    assert reply["served_by"]["model_id"] == result.model.model_id and reply["shadows_run"] == 1
    log = ShadowLog.model_validate(client.get(f"/v1/ensemble/deployments/{canary.model.model_id}/shadow").json())
    assert log.entries and log.entries[0].primary_model_id == result.model.model_id
    listed = client.get("/v1/ensemble/deployments", params={"name": "ensemble-SYN"}).json()["deployments"]
    assert {d["stage"] for d in listed} == {"full", "shadow"}


def test_a_discrete_rl_policy_of_the_symbol_joins_with_its_weight(served: tuple[TestClient, Any],
                                                                  bars: dict[str, Any]) -> None:
    client, _ = served
    recent = _recent(bars, 200)
    before = client.post("/v1/ensemble/predict", json={"data": recent, "symbol": "SYN"}).json()
    assert [s["source"] for s in before["sources"]] == ["lstm", "transformer"]
    job = client.post("/v1/rl/train", json={"data": bars, "symbol": "SYN", "agents": ["balanced"],
                                             "algorithm": "a2c", "timesteps": 400, "regime_features": False,
                                             "n_envs": 2, "seeds": 1, "grid": {"reward_scale": [1.0]}}).json()
    assert _wait(client, job["job_id"]).status == "succeeded"
    joined = client.post("/v1/ensemble/predict", json={"data": recent, "symbol": "SYN", "rl_weight": 0.2}).json()
    assert joined["method_used"] == "ensemble+rl"
    rl = joined["sources"][-1]
    assert rl["source"] == "rl:balanced-a2c" and rl["weight"] == 0.2
    assert sum(s["weight"] for s in joined["sources"]) == pytest.approx(1.0)
    off = client.post("/v1/ensemble/predict", json={"data": recent, "symbol": "SYN", "include_rl": False}).json()
    assert off["probabilities"] == pytest.approx(before["probabilities"])


def test_pinned_model_id_bypasses_stages(served: tuple[TestClient, Any], bars: dict[str, Any]) -> None:
    client, result = served
    reply = client.post("/v1/ensemble/predict", json={"data": _recent(bars, 120),
                                                      "model_id": result.model.model_id}).json()
    assert reply["served_by"]["variant"] == "pinned" and reply["model_id"] == result.model.model_id


def test_execution_plan_returns_size_and_timing_with_intervals(served: tuple[TestClient, Any],
                                                               bars: dict[str, Any]) -> None:
    client, result = served
    assert result.execution_model is not None
    body = {"signals": [{"signal": "up", "confidence": 0.6}, {"signal": "down", "confidence": 0.5}],
            "data": _recent(bars, 100), "model_id": result.execution_model.model_id, "decision_type": "exit"}
    resp = client.post("/v1/execution/plan", json=body)
    assert resp.status_code == 200, resp.text
    reply = ExecutionResponse.model_validate(resp.json())
    assert reply.model_id == result.execution_model.model_id and reply.samples == 30  # the exit default
    assert [p.direction for p in reply.plans] == [1, -1]
    for p in reply.plans:
        assert 0.0 <= p.size.lower <= p.size.mean <= p.size.upper <= 1.0 and p.size.std >= 0
        assert p.timing in ("now", "wait")
    market = [{"ret_1": 0.001, "ret_5": 0.01, "vol_10": 0.01, "vol_ratio": 1.0, "range": 0.012}]
    explicit = client.post("/v1/execution/plan", json={"signals": [{"signal": "up", "confidence": 0.7}],
                                                       "market": market, "samples": 8, "seed": 1,
                                                       "model_id": result.execution_model.model_id})
    assert explicit.status_code == 200 and explicit.json()["samples"] == 8


def test_batch_sizes_are_exported_as_a_prometheus_histogram(served: tuple[TestClient, Any]) -> None:
    client, _ = served
    text = client.get("/metrics").text
    assert 'quantcrew_inference_batch_size_count{model="ensemble"}' in text


@pytest.mark.parametrize(("body", "field"), [
    ({"symbol": "SYN", "last": 1}, "data"),  # neither bars nor features
    ({"symbol": "SYN", "samples": 0, "method": "mc_dropout"}, "samples"),
])
def test_predict_schema_errors_are_422(served: tuple[TestClient, Any], bars: dict[str, Any], body: dict[str, Any],
                                       field: str) -> None:
    client, _ = served
    if field != "data":
        body = {**body, "data": _recent(bars, 120)}
    resp = client.post("/v1/ensemble/predict", json=body)
    assert resp.status_code == 422
    assert field in resp.text


def test_predict_bad_input_is_a_clear_4xx(served: tuple[TestClient, Any], bars: dict[str, Any]) -> None:
    client, _ = served
    short = client.post("/v1/ensemble/predict", json={"data": _recent(bars, 40), "symbol": "SYN"})
    assert "data" in str(invalid_input(short))
    assert "at least" in short.json()["error"]["message"]
    feats = np.zeros((20, 12)).tolist()
    mismatch = client.post("/v1/ensemble/predict", json={
        "features": {"columns": [f"f{i}" for i in range(12)], "values": feats}, "symbol": "SYN"})
    assert "features" in str(invalid_input(mismatch))
    unknown = client.post("/v1/ensemble/predict", json={"data": _recent(bars, 120), "model_id": "ensemble-nope"})
    assert unknown.status_code == 404
    no_deploy = client.post("/v1/ensemble/predict", json={"data": _recent(bars, 120), "symbol": "NONE"})
    assert no_deploy.status_code == 404
    over = client.post("/v1/ensemble/predict", json={"data": _recent(bars, 400), "symbol": "SYN", "last": 300})
    assert "last" in str(invalid_input(over))
    too_many = client.post("/v1/ensemble/predict", json={"data": _recent(bars, 120), "symbol": "SYN",
                                                         "method": "mc_dropout", "samples": 5000})
    assert "samples" in str(invalid_input(too_many))


def test_execution_bad_input_is_a_clear_4xx(served: tuple[TestClient, Any], bars: dict[str, Any]) -> None:
    client, result = served
    assert result.execution_model is not None
    sig = [{"signal": "up", "confidence": 0.6}]
    assert client.post("/v1/execution/plan", json={"signals": sig, "data": _recent(bars, 100),
                                                   "samples": 0}).status_code == 422
    short = client.post("/v1/execution/plan", json={"signals": sig, "data": _recent(bars, 30),
                                                    "model_id": result.execution_model.model_id})
    assert "data" in str(invalid_input(short))
    unknown = client.post("/v1/execution/plan", json={"signals": sig, "data": _recent(bars, 100),
                                                      "model_id": "execution-nope"})
    assert unknown.status_code == 404
    ragged = client.post("/v1/execution/plan", json={"signals": sig * 2, "market": [
        {"ret_1": 0.0, "ret_5": 0.0, "vol_10": 0.01, "vol_ratio": 1.0, "range": 0.01}]})
    assert ragged.status_code == 422 and "market" in ragged.text


def test_train_bad_input_is_a_422_before_any_job(served: tuple[TestClient, Any], bars: dict[str, Any]) -> None:
    client, _ = served
    few = client.post("/v1/ensemble/train", json={"data": _recent(bars, 150), **TINY})
    assert "data" in str(invalid_input(few))
    late = client.post("/v1/ensemble/train", json={"data": bars, **TINY, "test_start": "2030-01-01"})
    assert "test_start" in str(invalid_input(late))
    heads = client.post("/v1/ensemble/train", json={"data": bars, **{**TINY, "hidden": 10, "heads": 4}})
    assert heads.status_code == 422 and "heads" in heads.text
    stage = client.post("/v1/ensemble/train", json={"data": bars, **TINY, "stage": "canary"})
    assert "share" in str(invalid_input(stage))


def _seed_ensemble(registry: ModelRegistry, window: int = 8) -> str:
    """An ensemble with random weights, written as the training job writes one."""
    f = len(FEATURE_NAMES)
    configs = {a: NetConfig(arch=a, members=2, n_features=f, window=window, hidden=8, heads=2)
               for a in ("lstm", "transformer")}
    spec = EnsembleSpec(configs=configs, temperatures={a: 1.0 for a in configs},
                        mc_temperatures={a: 1.0 for a in configs}, weights={a: 0.5 for a in configs},
                        scaler_mean=(0.0,) * f, scaler_std=(1.0,) * f, feature_names=FEATURE_NAMES, window=window,
                        horizon=5, up_threshold=0.005, down_threshold=0.005, symbol="TWO")
    nets = {a: build_net(c, seed=i) for i, (a, c) in enumerate(configs.items())}
    info = registry.save(family="ensemble", name="ensemble-TWO", method="lstm+transformer", obj=pack_state(nets),
                         fmt="torch", metadata=spec.to_metadata())
    return info.model_id


def test_two_apps_in_one_process_keep_their_own_rebuilt_models(tmp_path: Any) -> None:
    settings = load_settings(home=tmp_path / "home")
    with TestClient(create_app(settings)) as one, TestClient(create_app(settings)) as two:
        reg_one, reg_two = one.app.state.registry, two.app.state.registry  # type: ignore[attr-defined]
        variant = f"model:device={one.app.state.device}"  # type: ignore[attr-defined]
        model_id = _seed_ensemble(reg_one)
        values = np.random.default_rng(0).normal(size=(8, len(FEATURE_NAMES))).round(4).tolist()
        body = {"features": {"columns": list(FEATURE_NAMES), "values": values}, "model_id": model_id,
                "include_rl": False}
        first = one.post("/v1/ensemble/predict", json=body)
        assert first.status_code == 200, first.text
        assert reg_one.is_cached(model_id, variant) and not reg_two.is_cached(model_id, variant)
        second = two.post("/v1/ensemble/predict", json=body)
        assert second.status_code == 200, second.text
        assert second.json()["probabilities"] == first.json()["probabilities"]
        assert reg_two.is_cached(model_id, variant)
    assert reg_one is not reg_two
