"""Waiting for a server job through the app under test (the route tests that start jobs share it)."""

from __future__ import annotations

import time
from typing import Any, Protocol

from quantcrew.ml_server.schemas.jobs import JobInfo


class HTTPClient(Protocol):
    """What the helpers need of a client: an in-process TestClient or an ``httpx.Client`` on a live server."""

    def get(self, url: str) -> Any: ...

    def post(self, url: str, *, json: Any = None) -> Any: ...


def wait_job(client: HTTPClient, job_id: str, timeout_s: float = 120.0) -> JobInfo:
    """Poll ``GET /v1/jobs/{job_id}`` until the job is no longer queued or running; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        resp = client.get(f"/v1/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        job = JobInfo.model_validate(resp.json())
        if job.status not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.05)


def train_policy(client: HTTPClient, bars: dict[str, Any]) -> str:
    """Train one small RL policy (aggressive, A2C, 256 steps) through ``client``; its model id."""
    job = client.post("/v1/rl/train", json={
        "data": bars, "agents": ["aggressive"], "algorithm": "a2c", "timesteps": 256, "regime_features": False,
        "n_envs": 2, "seeds": 1, "grid": {"reward_scale": [1.0]}})
    assert job.status_code == 202, job.text
    done = wait_job(client, job.json()["job_id"], 120.0)
    assert done.status == "succeeded", done.error
    assert done.result is not None
    return str(done.result["policies"][0]["model_id"])
