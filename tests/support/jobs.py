"""Waiting for a server job through the app under test (the route tests that start jobs share it)."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from quantcrew.ml_server.schemas.jobs import JobInfo


def wait_job(client: TestClient, job_id: str, timeout_s: float = 120.0) -> JobInfo:
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
