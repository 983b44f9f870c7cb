"""The family registry and the contract every stateful family keeps, over HTTP.

For each stateful family of ``FAMILIES``: fit on a tiny fixture, then in a fresh app on the same
home (an empty model cache, so the model is really rebuilt from its artifact) predict and validate
the reply against its schema; an unknown id is a 404; an entry whose metadata does not describe
its artifact is a 409, and so is a tampered artifact.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from quantcrew.config.settings import Settings, load_settings
from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.families import FAMILIES, UnknownFamilyError, get_family, stateful_families
from quantcrew.ml_server.schemas.anomaly import AnomalyResponse
from quantcrew.ml_server.schemas.cluster import ClusterPredictResponse
from quantcrew.ml_server.schemas.decompose import DecomposeTransformResponse
from quantcrew.ml_server.schemas.ensemble import EnsemblePredictResponse
from quantcrew.ml_server.schemas.execution import ExecutionResponse
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.schemas.regime import RegimeLabelResponse
from quantcrew.ml_server.schemas.rl import RLActResponse
from quantcrew.ml_server.schemas.supervised import SupervisedPredictResponse
from tests.ml_server.services.anomaly.test_service import calm_market
from tests.ml_server.services.supervised.test_service import linear_data

Fit = Callable[[TestClient], str]
"""Fits (or trains) a model through the API and returns its registry id."""
Predict = Callable[[TestClient, str], Any]
"""Asks the API about new data with a stored model; returns the HTTP response."""


@dataclass(frozen=True)
class Case:
    """How one stateful family fits on a tiny fixture and answers with the stored model."""

    fit: Fit
    predict: Predict
    reply: type[BaseModel]


def _bars(n: int, seed: int) -> dict[str, Any]:
    return to_payload_dict(generate_regime_market(n, seed=seed).bars)


def _matrix(n: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    market = rng.normal(0, 0.01, n)
    values = np.outer(market, [1.0, 0.8, 1.2]) + rng.normal(0, 0.003, (n, 3))
    days = [str(np.datetime64("2022-01-03") + i) for i in range(n)]
    return {"columns": ["a", "b", "c"], "values": values.tolist(), "timestamps": days}


def _post(client: TestClient, url: str, body: dict[str, Any]) -> Any:
    resp = client.post(url, json=body)
    assert resp.status_code in (200, 202), resp.text
    return resp.json()


def _job(client: TestClient, url: str, body: dict[str, Any], timeout_s: float = 300.0) -> dict[str, Any]:
    job = JobInfo.model_validate(_post(client, url, body))
    deadline = time.monotonic() + timeout_s
    while job.status in ("queued", "running"):
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.1)
        job = JobInfo.model_validate(client.get(f"/v1/jobs/{job.job_id}").json())
    assert job.status == "succeeded", job.error
    assert job.result is not None
    return job.result


BARS = _bars(300, seed=3)
ENSEMBLE_BARS = _bars(520, seed=11)  # the execution network needs 120 out-of-sample rows of the walk-forward
MATRIX = _matrix(60, seed=4)
ANOMALY = calm_market(120, shocks=(100,))
FEATURES, TARGET = linear_data(60)
RL = {"agents": ["aggressive"], "algorithm": "ppo", "timesteps": 64, "n_envs": 1, "regime_features": False,
      "episode_length": 16, "seeds": 1, "grid": {"reward_scale": [1.0]}}
ENSEMBLE = {"members": 1, "architectures": ["lstm"], "window": 4, "hidden": 4, "heads": 1, "epochs": 1, "folds": 1,
            "batch_size": 64, "mc_samples": 2, "symbol": "SYN"}
SIGNALS = [{"signal": "up", "confidence": 0.6}]


def _trained_ensemble(client: TestClient) -> dict[str, Any]:
    return _job(client, "/v1/ensemble/train", {"data": ENSEMBLE_BARS, **ENSEMBLE})


CASES: dict[str, Case] = {
    "regime": Case(
        fit=lambda c: _post(c, "/v1/regime/fit", {"data": BARS, "n_states": 2, "n_restarts": 1})["model_id"],
        predict=lambda c, m: c.post("/v1/regime/predict", json={"model_id": m, "data": BARS}),
        reply=RegimeLabelResponse,
    ),
    "decompose": Case(
        fit=lambda c: _post(c, "/v1/decompose/fit", {"data": MATRIX, "n_components": 2})["model_id"],
        predict=lambda c, m: c.post("/v1/decompose/transform", json={"model_id": m, "data": MATRIX}),
        reply=DecomposeTransformResponse,
    ),
    "cluster": Case(
        fit=lambda c: _post(c, "/v1/cluster/fit", {"data": MATRIX, "n_clusters": 2})["model_id"],
        predict=lambda c, m: c.post("/v1/cluster/predict", json={"model_id": m, "data": MATRIX}),
        reply=ClusterPredictResponse,
    ),
    "anomaly": Case(
        fit=lambda c: _post(c, "/v1/anomaly/fit", {"data": ANOMALY, "n_estimators": 20})["model_id"],
        predict=lambda c, m: c.post("/v1/anomaly/score", json={"model_id": m, "data": ANOMALY}),
        reply=AnomalyResponse,
    ),
    "supervised": Case(
        fit=lambda c: _post(c, "/v1/supervised/fit", {"features": FEATURES, "target": TARGET, "task": "regression",
                                                      "n_estimators": 10})["model_id"],
        predict=lambda c, m: c.post("/v1/supervised/predict", json={"model_id": m, "features": FEATURES}),
        reply=SupervisedPredictResponse,
    ),
    "rl": Case(
        fit=lambda c: _job(c, "/v1/rl/train", {"data": BARS, **RL})["policies"][0]["model_id"],
        predict=lambda c, m: c.post("/v1/rl/act", json={"model_ids": [m], "data": BARS}),
        reply=RLActResponse,
    ),
    "ensemble": Case(
        fit=lambda c: _trained_ensemble(c)["model"]["model_id"],
        predict=lambda c, m: c.post("/v1/ensemble/predict", json={"model_id": m, "data": BARS}),
        reply=EnsemblePredictResponse,
    ),
    "execution": Case(
        fit=lambda c: _trained_ensemble(c)["execution_model"]["model_id"],
        predict=lambda c, m: c.post("/v1/execution/plan", json={"model_id": m, "signals": SIGNALS, "data": BARS,
                                                                "seed": 0}),
        reply=ExecutionResponse,
    ),
}
"""One case per stateful family; a family added to FAMILIES without one fails the tests below."""

_TORCH = {"rl", "ensemble", "execution"}  # trained as jobs: seconds, not milliseconds


def _cases() -> list[Any]:
    return [pytest.param(name, marks=[pytest.mark.slow] if name in _TORCH else [], id=name) for name in CASES]


@contextmanager
def _app(settings: Settings) -> Iterator[TestClient]:
    """A fresh app on ``settings``' home: its registry starts with an empty model cache."""
    with TestClient(create_app(settings)) as client:
        yield client


def _set_metadata(settings: Settings, model_id: str, metadata: dict[str, Any]) -> str:
    """Replace a registry entry's metadata (no app open); returns the previous one."""
    with sqlite3.connect(settings.registry_db) as db:
        (previous,) = db.execute("select metadata from models where model_id = ?", [model_id]).fetchone()
        db.execute("update models set metadata = ? where model_id = ?", [json.dumps(metadata), model_id])
    return str(previous)


def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["code"] == code, error
    return error


# ---------------------------------------------------------------------------------- the registry
def test_every_family_has_its_router_mounted_under_v1(client: TestClient) -> None:
    mounted = set(client.get("/openapi.json").json()["paths"])
    for family in FAMILIES.values():
        paths = {r.path for r in family.router.routes if isinstance(r, APIRoute)}
        assert paths and all(p.split("/")[1] == family.name for p in paths), family.name
        assert {f"/v1{p}" for p in paths} <= mounted, family.name


def test_openapi_lists_the_families_in_registry_order(client: TestClient) -> None:
    tags: list[str] = []
    for path in client.get("/openapi.json").json()["paths"].values():
        for operation in path.values():
            tag = operation["tags"][0]
            if tag in FAMILIES and tag not in tags:
                tags.append(tag)
    assert tags == list(FAMILIES)


def test_every_stateful_family_has_a_contract_case() -> None:
    assert set(CASES) == {f.name for f in stateful_families()}
    assert {"regime", "cluster", "decompose", "anomaly", "supervised", "rl", "ensemble", "execution"} == set(CASES)


def test_stateless_families_have_no_adapter() -> None:
    for family in FAMILIES.values():
        assert (family.adapter is not None) == family.stateful, family.name
    with pytest.raises(ValueError, match="stores no models"):
        get_family("risk").adapter_class()


@pytest.mark.parametrize("name", _cases())
def test_adapter_follows_the_model_adapter_protocol(name: str) -> None:
    adapter = get_family(name).adapter_class()
    assert adapter.family == name
    assert callable(adapter.to_artifact) and callable(adapter.from_artifact) and callable(adapter.fit)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_is_a_package_with_a_service_module(name: str) -> None:
    """One shape: services/<family>/service.py holds the verbs; a stateful family's adapter lives beside it."""
    package = Path(__file__).parents[2] / "quantcrew" / "ml_server" / "services" / name
    assert (package / "__init__.py").is_file(), f"{name} is not a package under services/"
    assert (package / "service.py").is_file(), f"{name} has no service.py"
    adapter = FAMILIES[name].adapter
    if isinstance(adapter, str):
        assert adapter.startswith(f"quantcrew.ml_server.services.{name}."), adapter


def test_get_family_unknown_name_lists_the_valid_ones() -> None:
    assert get_family("regime") is FAMILIES["regime"]
    with pytest.raises(UnknownFamilyError, match="'nope'; valid: regime, risk,"):
        get_family("nope")


def test_importing_the_registry_and_the_app_imports_no_torch() -> None:
    code = ("import sys; import quantcrew.ml_server.families, quantcrew.ml_server.app; "
            "sys.exit(int(any(m in sys.modules for m in ('torch', 'stable_baselines3'))))")
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=120).returncode == 0


def test_ready_announces_every_registered_family_in_mount_order(client: TestClient) -> None:
    assert client.get("/ready").json()["families"] == list(FAMILIES)


# ---------------------------------------------------------------------------------- the contract
@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Per family, a home holding its fitted model and the model's id: each family fits once per module."""
    return {}


@pytest.fixture
def fitted(request: pytest.FixtureRequest, homes: dict[str, tuple[Path, str]], tmp_path: Path,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str]:
    """The case's settings, on a copy of its family's home, and the id of the model fitted there."""
    name: str = request.param
    if name not in homes:
        home = tmp_path_factory.mktemp(f"{name}-home")
        with _app(load_settings(home=home)) as client:
            if name in ("ensemble", "execution"):  # one training job stores both
                result = _trained_ensemble(client)
                homes["ensemble"] = (home, result["model"]["model_id"])
                homes["execution"] = (home, result["execution_model"]["model_id"])
            else:
                homes[name] = (home, CASES[name].fit(client))
    source, model_id = homes[name]
    shutil.copytree(source, tmp_path / "home")
    return load_settings(home=tmp_path / "home"), model_id


@pytest.mark.parametrize("fitted", _cases(), indirect=True)
def test_stored_model_is_rebuilt_and_answers_with_its_schema(fitted: tuple[Settings, str]) -> None:
    settings, model_id = fitted
    family = model_id.split("-")[0]
    case = CASES[family]
    with _app(settings) as client:
        registry = client.app.state.registry  # type: ignore[attr-defined]
        assert registry.get(model_id).family == family
        assert registry.cached_count() == 0
        resp = case.predict(client, model_id)
        assert resp.status_code == 200, resp.text
        case.reply.model_validate(resp.json())
        assert registry.cached_count() >= 1  # rebuilt once, through the registry's one cache
        again = case.predict(client, model_id)
        assert again.status_code == 200 and case.reply.model_validate(again.json())
        _error(case.predict(client, f"{family}-doesnotexist"), 404, "model_not_found")


@pytest.mark.parametrize("fitted", _cases(), indirect=True)
def test_entry_that_does_not_describe_its_artifact_is_409(fitted: tuple[Settings, str]) -> None:
    settings, model_id = fitted
    case = CASES[model_id.split("-")[0]]
    previous = _set_metadata(settings, model_id, {"format": -1})
    with _app(settings) as client:
        error = _error(case.predict(client, model_id), 409, "artifact_integrity")
        assert error["details"]["model_id"] == model_id
    with sqlite3.connect(settings.registry_db) as db:
        db.execute("update models set metadata = ? where model_id = ?", [previous, model_id])
    with _app(settings) as client:
        assert case.predict(client, model_id).status_code == 200


@pytest.mark.parametrize("fitted", _cases(), indirect=True)
def test_tampered_artifact_is_409(fitted: tuple[Settings, str]) -> None:
    settings, model_id = fitted
    case = CASES[model_id.split("-")[0]]
    with _app(settings) as client:
        assert case.predict(client, model_id).status_code == 200  # cached now: the check must still run
        path = next(settings.artifacts_dir.glob(f"{model_id}.*"))
        path.write_bytes(path.read_bytes() + b"tampered")
        error = _error(case.predict(client, model_id), 409, "artifact_integrity")
        assert "SHA-256" in error["message"]
