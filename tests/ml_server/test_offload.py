"""Where a predict runs: on the event loop when its cached model is known without a read, else in a thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.cluster import KMeans

from quantcrew.ml_server import offload
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services.cluster import service as cluster_service
from quantcrew.ml_server.services.deployment import DeploymentStore

COLUMNS = ["a", "b", "c"]


def _table(rows: int, seed: int = 0) -> dict[str, Any]:
    values = np.random.default_rng(seed).normal(size=(rows, len(COLUMNS))).round(4).tolist()
    return {"columns": COLUMNS, "values": values}


@dataclass
class _Req:
    model_id: str | None = None
    name: str | None = None
    request_key: str | None = None


def test_only_a_cached_pinned_model_with_few_rows_is_light(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")
    fitted = KMeans(2, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(20, 2)))
    info = registry.save(family="cluster", name="k", method="kmeans", obj=fitted, fmt="skops")
    pinned = _Req(model_id=info.model_id)
    assert not offload.is_light(registry, None, pinned, 1)  # not rebuilt yet: it would be read from disk
    registry.rebuild(info.model_id, family="cluster", build=lambda obj, _info: obj, variant="model")
    assert offload.is_light(registry, None, pinned, 1)
    assert offload.is_light(registry, None, pinned, offload.LIGHT_ROWS)
    assert not offload.is_light(registry, None, pinned, offload.LIGHT_ROWS + 1)
    assert offload.is_light(registry, None, pinned, 5_000, max_rows=5_000)
    assert not offload.is_light(registry, None, _Req(name="k"), 1)  # by name, with no store to route it
    registry.close()


def test_a_name_is_light_once_its_routes_and_its_model_are_kept(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts")
    deployments = DeploymentStore(tmp_path / "registry.db")
    fitted = KMeans(2, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(20, 2)))
    info = registry.save(family="cluster", name="k", method="kmeans", obj=fitted, fmt="skops")
    deployments.set(model_id=info.model_id, name="k", version=info.version, stage="full")
    by_name = _Req(name="k", request_key="SPY")
    registry.rebuild(info.model_id, family="cluster", build=lambda obj, _info: obj, variant="model")
    assert not offload.is_light(registry, deployments, by_name, 1)  # the routes were never read
    deployments.route("k", "SPY")
    assert offload.is_light(registry, deployments, by_name, 1)
    assert not offload.is_light(registry, deployments, _Req(name="other"), 1)
    deployments.set(model_id="k-shadow", name="k", version=info.version + 1, stage="shadow")
    deployments.route("k", "SPY")
    assert not offload.is_light(registry, deployments, by_name, 1)  # a shadow writes the shadow log
    deployments.close()
    registry.close()


@pytest.fixture
def threads_seen(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the threads the cluster predict service ran on, in order."""
    seen: list[str] = []
    real: Callable[..., Any] = cluster_service.predict

    def watched(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(cluster_service, "predict", watched)
    return seen


def test_a_light_predict_runs_on_the_loop_once_its_model_is_cached(client: TestClient, threads_seen: list[str]) -> None:
    fit = client.post("/v1/cluster/fit", json={"data": _table(60), "method": "kmeans", "n_clusters": 2, "name": "k"})
    assert fit.status_code == 200, fit.text
    model_id = fit.json()["model_id"]
    body = {"model_id": model_id, "data": _table(1, seed=1)}
    first, second = client.post("/v1/cluster/predict", json=body), client.post("/v1/cluster/predict", json=body)
    assert first.status_code == second.status_code == 200
    assert first.json()["labels"] == second.json()["labels"]
    loop_thread = threads_seen[1]
    assert "worker" in threads_seen[0].lower()  # rebuilt from its artifact: off the loop
    assert "worker" not in loop_thread.lower()
    heavy = client.post("/v1/cluster/predict", json={"model_id": model_id, "data": _table(offload.LIGHT_ROWS + 1)})
    assert heavy.status_code == 200
    assert "worker" in threads_seen[2].lower()


def test_a_light_predict_by_name_runs_on_the_loop_once_its_route_is_kept(client: TestClient,
                                                                       threads_seen: list[str]) -> None:
    fit = client.post("/v1/cluster/fit", json={"data": _table(60), "method": "kmeans", "n_clusters": 2,
                                               "name": "states"})
    assert fit.status_code == 200, fit.text
    staged = client.post(f"/v1/models/{fit.json()['model_id']}/stage", json={"stage": "full"})
    assert staged.status_code == 200, staged.text
    body = {"name": "states", "request_key": "SPY", "data": _table(1, seed=1)}
    first, second = client.post("/v1/cluster/predict", json=body), client.post("/v1/cluster/predict", json=body)
    assert first.status_code == second.status_code == 200, first.text
    assert first.json()["served_by"]["model_id"] == second.json()["served_by"]["model_id"] == fit.json()["model_id"]
    assert first.json()["labels"] == second.json()["labels"]
    assert "worker" in threads_seen[0].lower()  # routes read and model rebuilt: off the loop
    assert "worker" not in threads_seen[1].lower()


def test_an_error_on_the_loop_is_the_same_answer_as_in_a_thread(client: TestClient) -> None:
    fit = client.post("/v1/cluster/fit", json={"data": _table(60), "method": "kmeans", "n_clusters": 2})
    model_id = fit.json()["model_id"]
    wrong = {"model_id": model_id, "data": {"columns": ["a", "c", "b"], "values": [[0.1, 0.2, 0.3]]}}
    cold = client.post("/v1/cluster/predict", json=wrong)  # not cached yet: in a thread
    client.post("/v1/cluster/predict", json={"model_id": model_id, "data": _table(1)})
    warm = client.post("/v1/cluster/predict", json=wrong)  # cached: on the loop
    assert cold.status_code == warm.status_code == 422
    assert cold.json()["error"]["code"] == warm.json()["error"]["code"]
    assert client.get("/health").status_code == 200  # the connection and the loop are fine after it
