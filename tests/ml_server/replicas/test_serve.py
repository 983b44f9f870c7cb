"""``quantcrew-server --ray``: the HTTP contract over Ray Serve with two replicas on one shared home.

One real server for the package (``ray_server`` in conftest.py): ``quantcrew-server --ray
--replicas 2`` with an API key. Which replica answered is read from the ``X-Quantcrew-Replica``
header the deployment adds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from quantcrew.config.server_lock import hold_home, running_servers
from quantcrew.config.settings import Settings
from quantcrew.ml_server.replicas.options import DEPLOYMENT_NAME
from quantcrew.ml_server.replicas.serve import MISSING_RAY, build_app, ray_auth_env, serve_ray
from quantcrew.ml_server.schemas.bandit import BanditState
from quantcrew.ml_server.schemas.cluster import ClusterFitResponse, ClusterPredictResponse
from tests.ml_server.replicas.conftest import KEY, REPLICA, RayServer
from tests.support.replies import invalid_input

SERVE_CONFIG = Path(__file__).resolve().parents[3] / "deploy" / "ray" / "serve_config.yaml"


def _until_replicas(call: Any, want: int = 2, tries: int = 60) -> dict[str, httpx.Response]:
    """Repeat ``call()`` until ``want`` different replicas answered; their answers by replica."""
    seen: dict[str, httpx.Response] = {}
    for _ in range(tries):
        resp = call()
        seen.setdefault(resp.headers[REPLICA], resp)
        if len(seen) >= want:
            return seen
    raise AssertionError(f"only replicas {sorted(seen)} answered in {tries} requests")


def _states(seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.10, 0.02], [0.35, -0.05], [0.20, 0.08]])
    x = centres[rng.integers(0, 3, 90)] + rng.normal(0, 0.01, (90, 2))
    return {"columns": ["vol", "trend"], "values": x.round(5).tolist()}


def test_every_replica_runs_the_app_lifespan_on_the_shared_home(ray_server: RayServer) -> None:
    with ray_server.client() as http:
        answers = _until_replicas(lambda: http.get("/ready"))
    for resp in answers.values():  # /ready needs the registry and the device the lifespan opens
        assert resp.status_code == 200, resp.text
        assert resp.json()["ready"] and resp.json()["device"] == "cpu" and "cluster" in resp.json()["families"]
    holders = running_servers(ray_server.home)  # the driver and each replica hold the home, shared
    assert len(holders) == 3 and all(h.shared and h.url == ray_server.url for h in holders), holders
    assert len({h.pid for h in holders}) == 3 and os.getpid() not in {h.pid for h in holders}


_MCP_INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                   "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "test", "version": "0"}}}


async def test_every_replica_serves_the_mcp_tools(ray_server: RayServer) -> None:
    with ray_server.client() as http:  # the MCP session manager runs in each replica's lifespan
        answers = _until_replicas(lambda: http.post("/mcp", json=_MCP_INITIALIZE,
                                                    headers={"Accept": "application/json, text/event-stream"}))
    for resp in answers.values():
        assert resp.status_code == 200 and resp.json()["result"]["serverInfo"], resp.text
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http_async, \
            streamable_http_client(ray_server.url + "/mcp", http_client=http_async) as (read, write, _), \
            ClientSession(read, write) as client:
        await client.initialize()
        names = {tool.name for tool in (await client.list_tools()).tools}
    assert names and any("cluster" in name for name in names), names


def test_health_is_open_and_the_rest_needs_the_key(ray_server: RayServer) -> None:
    with ray_server.client(key=None) as http:
        health = http.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        for method, path in (("GET", "/ready"), ("GET", "/metrics"), ("POST", "/v1/cluster/fit")):
            resp = http.request(method, path, json={})
            assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized", (path, resp.text)
    with ray_server.client(key="wrong") as http:
        assert http.post("/v1/cluster/fit", json={}).status_code == 401


def test_a_fit_on_one_replica_is_predicted_on_the_other(ray_server: RayServer) -> None:
    data = _states()
    with ray_server.client() as http:
        fit = http.post("/v1/cluster/fit", json={"data": data, "n_clusters": 3, "name": "ray-states"})
        assert fit.status_code == 200, fit.text
        fitted = ClusterFitResponse.model_validate(fit.json())
        first = fit.headers[REPLICA]
        for _ in range(60):
            pred = http.post("/v1/cluster/predict", json={"model_id": fitted.model_id, "data": data})
            assert pred.status_code == 200, pred.text
            if pred.headers[REPLICA] != first:
                break
        else:
            pytest.fail(f"every predict was answered by the replica that fitted ({first})")
    predicted = ClusterPredictResponse.model_validate(pred.json())
    assert predicted.model_id == fitted.model_id and predicted.labels == fitted.labels


def test_bad_input_is_a_422_naming_the_field(ray_server: RayServer) -> None:
    with ray_server.client() as http:
        err = invalid_input(http.post("/v1/cluster/fit", json={"data": _states(), "n_clusters": -1}))
    assert any(d["loc"][-1] == "n_clusters" for d in err["details"]), err


def test_metrics_are_served_by_the_replica_that_answers(ray_server: RayServer) -> None:
    with ray_server.client() as http:
        http.get("/health")
        answers = _until_replicas(lambda: http.get("/metrics"))
    for resp in answers.values():
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
        assert "quantcrew_http_requests_total" in resp.text


def test_a_bandit_rewarded_through_both_replicas_keeps_exact_counts(ray_server: RayServer) -> None:
    rounds = 24
    with ray_server.client() as http:
        created = http.post("/v1/bandit", json={"name": "ray-meta", "policy": "ucb1"})
        assert created.status_code == 201, created.text

        def step(k: int) -> set[str]:
            decision = http.post("/v1/bandit/select", json={"bandit": "ray-meta", "regime": "bull"})
            assert decision.status_code == 200, decision.text
            reward = http.post("/v1/bandit/reward", json={"decision_id": decision.json()["decision_id"],
                                                          "reward": (k % 5) / 5})
            assert reward.status_code == 200, reward.text
            return {decision.headers[REPLICA], reward.headers[REPLICA]}

        with ThreadPoolExecutor(max_workers=6) as pool:
            replicas = set().union(*pool.map(step, range(rounds)))
        state = http.get("/v1/bandit/ray-meta")
    assert len(replicas) == 2, replicas
    assert state.status_code == 200, state.text
    body = BanditState.model_validate(state.json())
    assert body.pulls == rounds and body.bandit.decisions == rounds and body.bandit.pulls == rounds


_GCS_PROBE = """
import json, os, sys
from ray._private.authentication_test_utils import reset_auth_token_state
from ray._raylet import GcsClient

answers = {}
for token in (None, "not-the-token", sys.argv[2]):
    if token is None:  # no token at all: a client without token mode sends none
        os.environ.pop("RAY_AUTH_MODE", None)
        os.environ.pop("RAY_AUTH_TOKEN", None)
    else:
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    reset_auth_token_state()  # Ray's test helper: read the mode and the token again
    try:
        GcsClient(address=sys.argv[1])
        answers[str(token)] = "connected"
    except Exception as exc:
        answers[str(token)] = type(exc).__name__
print(json.dumps(answers))
"""


def test_the_ray_cluster_admits_only_clients_with_its_token(ray_server: RayServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on
    probe = subprocess.run([sys.executable, "-c", _GCS_PROBE, ray_server.gcs_address, ray_server.ray_token],
                           env=env, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert json.loads(probe.stdout.splitlines()[-1]) == {
        "None": "AuthenticationError", "not-the-token": "AuthenticationError", ray_server.ray_token: "connected"}


@pytest.fixture
def ray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """serve_ray sets Ray's auth variables: undone after the test."""
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)


def test_ray_auth_follows_the_settings(settings: Settings) -> None:
    assert ray_auth_env(settings) == {"RAY_AUTH_MODE": "token"}
    settings.ray.auth_token = SecretStr("t0ken")
    assert ray_auth_env(settings) == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "t0ken"}
    settings.ray.token_auth = False
    assert ray_auth_env(settings)["RAY_AUTH_MODE"] == "disabled"


def test_a_missing_ray_is_a_clear_exit_2(settings: Settings, monkeypatch: pytest.MonkeyPatch, ray_env: None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    assert serve_ray(settings) == 2
    assert MISSING_RAY in capsys.readouterr().err


def test_a_home_held_by_an_exclusive_server_refuses_at_once(settings: Settings, ray_env: None,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with hold_home(settings.home, "http://127.0.0.1:1"):
        started = time.monotonic()
        assert serve_ray(settings) == 2
    assert time.monotonic() - started < 10  # refused before any Ray process starts
    assert "http://127.0.0.1:1" in capsys.readouterr().err


def test_build_app_takes_the_serve_config_args(settings: Settings) -> None:
    pytest.importorskip("ray.serve")
    app = build_app({"replicas": 3, "num_cpus": 0.25, "url": "http://127.0.0.1:9"})
    deployment = app._bound_deployment  # noqa: SLF001 - what serve run would deploy
    assert deployment.name == DEPLOYMENT_NAME and deployment.num_replicas == 3
    assert deployment.ray_actor_options == {"num_cpus": 0.25, "num_gpus": 0.0}
    replica_settings, url = list(deployment.init_args)
    assert replica_settings.server.shared_home and url == "http://127.0.0.1:9"
    with pytest.raises(ValueError, match="unknown serve config args \\['replica'\\]"):
        build_app({"replica": 3})
    with pytest.raises(ValueError, match="replicas"):
        build_app({"replicas": 0})


def test_the_serve_config_deploys_build_app() -> None:
    pytest.importorskip("ray.serve")
    from ray._common.utils import import_attr
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(SERVE_CONFIG.read_text()))
    (app_config,) = config.applications
    assert import_attr(app_config.import_path) is build_app and app_config.route_prefix == "/"
    deployment = build_app(app_config.args)._bound_deployment  # noqa: SLF001
    assert deployment.num_replicas == app_config.args["replicas"]
    assert deployment.init_args[1] == app_config.args["url"] == (
        f"http://{config.http_options.host}:{config.http_options.port}")
