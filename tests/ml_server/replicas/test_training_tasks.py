"""Training jobs on the Ray Serve deployment fan their pieces out as Ray tasks of the replicas' cluster."""

from __future__ import annotations

from typing import Any

from quantcrew.data import generate_regime_market, to_payload_dict
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.schemas.rl import RLTrainResult
from tests.ml_server.replicas.conftest import RayServer
from tests.support.jobs import wait_job

RUNS = {"agents": ["aggressive"], "algorithm": "a2c", "timesteps": 256, "regime_features": False, "n_envs": 2,
        "seeds": 3, "grid": {"reward_scale": [1.0]}}


def _bars() -> dict[str, Any]:
    return to_payload_dict(generate_regime_market(600, seed=5).bars)


def test_an_rl_search_trains_its_runs_as_ray_tasks(ray_server: RayServer) -> None:
    with ray_server.client() as http:
        resp = http.post("/v1/rl/train", json={"data": _bars(), **RUNS, "name_prefix": "ray-tasks"})
        assert resp.status_code == 202, resp.text
        done = wait_job(http, JobInfo.model_validate(resp.json()).job_id, 180.0)  # any replica reads the job
        assert done.status == "succeeded", done.error
        assert done.progress.done == done.progress.total == 3 * 256
        policy = RLTrainResult.model_validate(done.result).policies[0]
        assert len(policy.runs) == 3 and sum(r.chosen for r in policy.runs) == 1
        info = http.get(f"/v1/models/{policy.model_id}")
        assert info.status_code == 200, info.text
        search = info.json()["metadata"]["search"]
        assert search["trained_on"] == "ray", ray_server.log.read_text(errors="replace")[-2000:]
        acted = http.post("/v1/rl/act", json={"data": _bars(), "model_ids": [policy.model_id]})
        assert acted.status_code == 200, acted.text  # the policy rebuilt from a task's weights answers


def test_an_ensembles_walk_forward_folds_train_as_ray_tasks(ray_server: RayServer) -> None:
    body = {"data": _bars(), "symbol": "TASKS", "members": 1, "window": 5, "hidden": 4, "heads": 1, "epochs": 1,
            "folds": 3, "batch_size": 128, "mc_samples": 2, "execution": False, "deploy": False}
    with ray_server.client() as http:
        resp = http.post("/v1/ensemble/train", json=body)
        assert resp.status_code == 202, resp.text
        done = wait_job(http, JobInfo.model_validate(resp.json()).job_id, 180.0)
        assert done.status == "succeeded", done.error
        assert done.result is not None and len(done.result["folds"]) == 3
        info = http.get(f"/v1/models/{done.result['model']['model_id']}")
        assert info.status_code == 200, info.text
        assert info.json()["metadata"]["folds_trained_on"] == "ray", ray_server.log.read_text(errors="replace")[-2000:]
