"""ExplainSignalTool against the real app: the deployed ensemble explained (local, global, both), no ensemble
trained (says it could not explain and how to train one), server down, bad arguments."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings, load_settings
from quantcrew.data import load_sample, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.ensemble import DeploymentRequest, EnsemblePredictRequest
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES, WARMUP, build_features
from quantcrew.ml_server.services.ensemble.model import EnsembleSpec, pack_state
from quantcrew.ml_server.services.ensemble.nets import NetConfig, build_net
from quantcrew.ml_server.services.gate import ensemble_gate
from quantcrew.tools.client import AsyncMLClient, MLClient
from quantcrew.tools.explain import ExplainSignalTool


@dataclass(frozen=True)
class _Deployed:
    settings: Settings
    client: MLClient
    model_id: str


def _store_ensemble(registry: ModelRegistry, symbol: str) -> str:
    """A small ensemble stored as training stores one (its nets seeded, not trained: the tool's flow is what is
    checked here; tests/ml_server/routes/test_explain.py explains real fits)."""
    f = len(FEATURE_NAMES)
    configs = {a: NetConfig(arch=a, members=1, n_features=f, window=5, hidden=4, heads=1)
               for a in ("lstm", "transformer")}
    feats = build_features(*(np.asarray(c) for c in (BARS.open, BARS.high, BARS.low, BARS.close, BARS.volume)))
    spec = EnsembleSpec(configs=configs, temperatures={a: 1.0 for a in configs},
                        mc_temperatures={a: 1.0 for a in configs}, weights={a: 0.5 for a in configs},
                        scaler_mean=tuple(np.nanmean(feats[WARMUP:], axis=0)),
                        scaler_std=tuple(np.nanstd(feats[WARMUP:], axis=0) + 1e-9), feature_names=FEATURE_NAMES,
                        window=5, horizon=5, up_threshold=0.005, down_threshold=0.005, symbol=symbol)
    nets = {a: build_net(c, seed=i) for i, (a, c) in enumerate(configs.items())}
    info = registry.save(family="ensemble", name=f"ensemble-{symbol}", method="lstm+transformer",
                         obj=pack_state(nets), fmt="torch", metadata=spec.to_metadata())
    return info.model_id


BARS = load_sample("SP500").tail(400)


def _store_gated(registry: ModelRegistry, symbol: str) -> None:
    """An ensemble as training stores one that failed its gate: judged, never deployed."""
    rng = np.random.default_rng(0)
    gate = ensemble_gate(probabilities=np.full((200, 3), 1 / 3), labels=rng.integers(0, 3, 200),
                         train_frequencies=np.array([0.3, 0.2, 0.5]), horizon=5, span_start="2017-01-03",
                         span_end="2018-12-31", rule="trend rules")
    assert not gate.passed
    registry.save(family="ensemble", name=f"ensemble-{symbol}", method="stand-in", obj={}, fmt="json",
                  metadata={"symbol": symbol, "gate": gate.model_dump(mode="json")}, stage="gated")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Deployed]:
    """One app with an ensemble for the S&P 500, deployed."""
    home = tmp_path_factory.mktemp("explain-tools-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(Path(home))
        for name in [n for n in os.environ if n.startswith("QUANTCREW_")]:
            mp.delenv(name)
        settings = load_settings(home=home)
    with TestClient(create_app(settings)) as tc:
        client = MLClient(tc)
        registry = tc.app.state.registry  # type: ignore[attr-defined]
        model_id = _store_ensemble(registry, "SP500")
        client.ensemble_deploy(DeploymentRequest(model_id=model_id, stage="full"))
        _store_gated(registry, "NASDAQ")
        yield _Deployed(settings, client, model_id)


def test_the_latest_signal_is_explained_feature_by_feature(deployed: _Deployed) -> None:
    tool = ExplainSignalTool(settings=deployed.settings, client=deployed.client)
    text = tool.run(symbol="SP500", lookback=200)
    result = tool.last_result
    assert result is not None and result.ok and not result.degraded, text
    local = result.data["local"]
    predicted = deployed.client.ensemble_predict(EnsemblePredictRequest.model_validate({
        "data": to_payload_dict(load_sample("SP500").tail(200)), "model_id": deployed.model_id}))
    assert local["model_id"] == deployed.model_id and local["label"] == predicted.signal
    assert local["prediction"] == pytest.approx(predicted.probabilities["up"] - predicted.probabilities["down"],
                                                abs=1e-6)
    assert sorted(f["name"] for f in local["features"]) == sorted(FEATURE_NAMES)
    top = local["features"][0]["name"]
    assert f"{predicted.signal.upper()}" in text and f"{top}=" in text and deployed.model_id in text
    assert "global" not in result.data


def test_both_scopes_name_the_important_features_and_the_surrogate_fidelity(deployed: _Deployed) -> None:
    tool = ExplainSignalTool(settings=deployed.settings, client=deployed.client)
    text = tool.run(symbol="SP500", lookback=150, scope="both")
    result = tool.last_result
    assert result is not None and result.ok, text
    assert set(result.data) == {"symbol", "scope", "local", "global"}
    glob = result.data["global"]
    assert glob["rows"] == 150 - (WARMUP + 5 - 1)  # every bar with a full 5-bar window of features
    assert glob["repeats"] == 3 and glob["family"] == "ensemble" and "text" not in glob["surrogate"]
    assert glob["features"][0]["name"] in text and "What moved it" in text
    assert f"{glob['surrogate']['fidelity']:.2f}" in text and "tree mimics the model" in text


def test_without_a_deployed_ensemble_it_says_it_could_not_explain_and_how_to_train(ml_client: MLClient,
                                                                                  settings: Settings) -> None:
    tool = ExplainSignalTool(settings=settings, client=ml_client)
    text = tool.run(symbol="NASDAQ", lookback=200)
    result = tool.last_result
    assert result is not None and not result.ok and not result.degraded
    assert "could not explain NASDAQ" in text and "quantcrew setup --symbols NASDAQ" in text


def test_a_gated_ensemble_is_not_explained_and_the_answer_names_its_gate(deployed: _Deployed) -> None:
    tool = ExplainSignalTool(settings=deployed.settings, client=deployed.client)
    text = tool.run(symbol="NASDAQ", lookback=200)
    result = tool.last_result
    assert result is not None and not result.ok and not result.degraded and not result.gated
    assert "could not explain NASDAQ" in text and "gated by its quality gate: failed" in text
    assert "a gated model is not explained" in text


async def test_the_async_path_answers_like_the_sync_one(deployed: _Deployed) -> None:
    tool = ExplainSignalTool(settings=deployed.settings, client=deployed.client)
    sync_text = tool.run(symbol="SP500", lookback=200)
    app = create_app(deployed.settings)  # a second app on the same registry sees the same models
    async with app.router.lifespan_context(app):
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ml.test")
        async with AsyncMLClient(http) as client:
            atool = ExplainSignalTool(settings=deployed.settings, async_client=client)
            async_text = await atool.arun(symbol="SP500", lookback=200)
    assert async_text == sync_text and "What moved it" in async_text


def test_with_the_server_down_it_says_it_could_not_explain(dead_server: Settings) -> None:
    tool = ExplainSignalTool(settings=dead_server)
    text = tool.run(symbol="SP500", lookback=200)
    result = tool.last_result
    assert result is not None and not result.ok and not result.degraded
    assert "could not explain SP500" in text and "ML server unavailable" in text
    assert "do not infer one" in text


def test_a_bad_scope_is_a_bad_argument(settings: Settings) -> None:
    tool = ExplainSignalTool(settings=settings)
    text = tool.run(symbol="SP500", scope="everything")
    assert tool.last_result is not None and tool.last_result.failure == "bad_input"
    assert "scope must be one of" in text
