"""Job routes over HTTP (TestClient): poll, list, cancel, error bodies, the lifespan's shutdown."""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.jobs import JobCancelled, JobContext, JobFn, JobManager
from quantcrew.ml_server.schemas.jobs import JobInfo, JobList

WAIT_S = 5.0


def _jobs(client: TestClient) -> JobManager:
    manager: JobManager = client.app.state.jobs  # type: ignore[attr-defined]
    return manager


def _held(started: threading.Event, release: threading.Event, *, honour_cancel: bool = True) -> JobFn:
    def fn(ctx: JobContext) -> dict[str, Any]:
        ctx.report(done=1, total=4, message="first episode", metrics={"episode_reward": -0.5})
        started.set()
        assert release.wait(WAIT_S)
        if honour_cancel and ctx.cancelled:
            raise JobCancelled
        ctx.report(done=4, total=4)
        return {"model_id": "rl-0123456789ab"}

    return fn


def _error(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    error: dict[str, Any] = body["error"]
    return error


def test_get_job_reports_progress_then_result(client: TestClient) -> None:
    started, release = threading.Event(), threading.Event()
    job = _jobs(client).submit("rl_train", _held(started, release), params={"timesteps": 64})
    assert started.wait(WAIT_S)
    resp = client.get(f"/v1/jobs/{job.job_id}")
    assert resp.status_code == 200, resp.text
    running = JobInfo.model_validate(resp.json())
    assert running.status == "running" and running.kind == "rl_train" and running.params == {"timesteps": 64}
    assert running.progress.done == 1 and running.progress.fraction == 0.25
    assert running.progress.message == "first episode" and running.progress.metrics == {"episode_reward": -0.5}
    release.set()
    _jobs(client).wait(job.job_id, WAIT_S)
    done = JobInfo.model_validate(client.get(f"/v1/jobs/{job.job_id}").json())
    assert done.status == "succeeded" and done.result == {"model_id": "rl-0123456789ab"}
    assert done.progress.fraction == 1.0 and done.error is None


def test_list_jobs_filters_and_limits(client: TestClient) -> None:
    jobs = _jobs(client)
    a = jobs.wait(jobs.submit("rl_train", lambda ctx: {}, params={}).job_id, WAIT_S)
    b = jobs.wait(jobs.submit("walk_forward", lambda ctx: {}, params={}).job_id, WAIT_S)
    resp = client.get("/v1/jobs")
    assert resp.status_code == 200, resp.text
    assert [j.job_id for j in JobList.model_validate(resp.json()).jobs] == [b.job_id, a.job_id]
    only = client.get("/v1/jobs", params={"kind": "rl_train", "status": "succeeded"}).json()
    assert [j["job_id"] for j in only["jobs"]] == [a.job_id]
    assert client.get("/v1/jobs", params={"status": "failed"}).json() == {"jobs": []}
    assert [j["job_id"] for j in client.get("/v1/jobs", params={"limit": 1}).json()["jobs"]] == [b.job_id]


def test_list_jobs_with_unknown_status_returns_422_listing_valid_ones(client: TestClient) -> None:
    error = _error(client.get("/v1/jobs", params={"status": "done"}), 422, "invalid_input")
    assert error["message"].startswith("query.status:")
    for status in ("queued", "running", "succeeded", "failed", "cancelled", "interrupted"):
        assert status in error["message"]
    assert error["details"][0]["loc"] == ["query", "status"]


def test_list_jobs_with_limit_out_of_range_returns_422(client: TestClient) -> None:
    for limit in (0, 1001):
        error = _error(client.get("/v1/jobs", params={"limit": limit}), 422, "invalid_input")
        assert error["details"][0]["loc"] == ["query", "limit"]


def test_get_unknown_job_returns_404(client: TestClient) -> None:
    error = _error(client.get("/v1/jobs/job-0000000000000000"), 404, "not_found")
    assert "job-0000000000000000" in error["message"]
    assert error["details"] == {"job_id": "job-0000000000000000"}
    _error(client.delete("/v1/jobs/job-0000000000000000"), 404, "not_found")


def test_delete_running_job_returns_202_then_job_is_cancelled(client: TestClient) -> None:
    started, release = threading.Event(), threading.Event()
    job = _jobs(client).submit("rl_train", _held(started, release), params={})
    assert started.wait(WAIT_S)
    resp = client.delete(f"/v1/jobs/{job.job_id}")
    assert resp.status_code == 202, resp.text
    asked = JobInfo.model_validate(resp.json())
    assert asked.status == "running" and asked.cancel_requested
    release.set()
    _jobs(client).wait(job.job_id, WAIT_S)
    done = client.get(f"/v1/jobs/{job.job_id}").json()
    assert done["status"] == "cancelled" and done["progress"]["done"] == 1 and done["result"] is None


def test_delete_queued_job_returns_200_cancelled(client: TestClient) -> None:
    started, release = threading.Event(), threading.Event()
    jobs = _jobs(client)
    blocker = jobs.submit("rl_train", _held(started, release), params={})
    assert started.wait(WAIT_S)
    queued = jobs.submit("rl_train", lambda ctx: {}, params={})
    resp = client.delete(f"/v1/jobs/{queued.job_id}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "cancelled" and resp.json()["cancel_requested"] is True
    release.set()
    assert jobs.wait(blocker.job_id, WAIT_S).status == "succeeded"


def test_delete_finished_job_returns_409(client: TestClient) -> None:
    jobs = _jobs(client)
    job = jobs.wait(jobs.submit("rl_train", lambda ctx: {}, params={}).job_id, WAIT_S)
    error = _error(client.delete(f"/v1/jobs/{job.job_id}"), 409, "conflict")
    assert error["message"] == f"job {job.job_id} already finished (succeeded); nothing to cancel"
    assert error["details"] == {"job_id": job.job_id, "status": "succeeded"}


def test_failed_job_shows_error_body_over_http(client: TestClient) -> None:
    def boom(ctx: JobContext) -> dict[str, Any]:
        raise ValueError("observation has 3 columns, expected 4")

    jobs = _jobs(client)
    job = jobs.wait(jobs.submit("rl_train", boom, params={}).job_id, WAIT_S)
    body = client.get(f"/v1/jobs/{job.job_id}").json()
    assert body["status"] == "failed" and body["result"] is None
    assert body["error"] == {"code": "internal_error", "message": "ValueError: observation has 3 columns, expected 4",
                             "details": None}


def test_job_finishes_without_any_request_in_flight(client: TestClient) -> None:
    # The request that started the job has long returned; nothing polls while it runs.
    started, release = threading.Event(), threading.Event()
    job = _jobs(client).submit("rl_train", _held(started, release), params={})
    assert client.get(f"/v1/jobs/{job.job_id}").status_code == 200  # the last request made
    assert started.wait(WAIT_S)
    release.set()
    assert _jobs(client).wait(job.job_id, WAIT_S).status == "succeeded"


def test_server_shutdown_stops_running_job(settings: Settings) -> None:
    started = threading.Event()

    def loop(ctx: JobContext) -> dict[str, Any]:
        while not ctx.cancelled:
            started.set()
            time.sleep(0.005)
        raise JobCancelled

    with TestClient(create_app(settings)) as tc:
        job = _jobs(tc).submit("rl_train", loop, params={})
        assert started.wait(WAIT_S)
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 3.0  # the lifespan's shutdown did not wait for a timeout
    with TestClient(create_app(settings)) as tc:
        assert tc.get(f"/v1/jobs/{job.job_id}").json()["status"] == "cancelled"
