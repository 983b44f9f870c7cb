"""The job manager: submit, read, cancel, wait and shut down, with real worker threads."""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from quantcrew.ml_server.errors import ConflictError, InvalidInputError, ModelNotReadyError, NotFoundError
from quantcrew.ml_server.jobs import INTERRUPTED_MESSAGE, JobCancelled, JobContext, JobManager
from tests.ml_server.jobs.support import WAIT_S, blocking, until_cancelled


def test_submit_returns_queued_entry_with_params(manager: JobManager) -> None:
    started, release = threading.Event(), threading.Event()
    first = manager.submit("rl_train", blocking(started, release), params={"timesteps": 64})
    assert first.status == "queued"  # even though a worker is free and picks it up at once
    assert started.wait(WAIT_S)
    second = manager.submit("rl_train", blocking(threading.Event(), release), params={"algo": "ppo"})
    assert re.fullmatch(r"job-[0-9a-f]{16}", first.job_id) and first.job_id != second.job_id
    assert second.status == "queued" and not second.cancel_requested
    assert second.started_at is None and second.finished_at is None and second.result is None
    assert second.params == {"algo": "ppo"}
    assert second.created_at.utcoffset() == timedelta(0)
    assert manager.get(first.job_id).params == {"timesteps": 64}
    release.set()
    assert manager.wait(second.job_id, WAIT_S).status == "succeeded"


def test_get_shows_progress_while_running_then_result(manager: JobManager) -> None:
    reported, release = threading.Event(), threading.Event()

    def fn(ctx: JobContext) -> dict[str, Any]:
        ctx.report(done=3, total=10, message="episode 3", metrics={"episode_reward": 1.5})
        reported.set()
        assert release.wait(WAIT_S)
        ctx.report(done=10, total=10, metrics={"episode_reward": 2.0})
        return {"model_id": "rl-abc", "mean_reward": 2.0}

    job = manager.submit("rl_train", fn, params={})
    assert reported.wait(WAIT_S)
    running = manager.get(job.job_id)
    assert running.status == "running" and running.started_at is not None and running.finished_at is None
    assert (running.progress.done, running.progress.total) == (3, 10)
    assert running.progress.fraction == pytest.approx(0.3)
    assert running.progress.message == "episode 3"
    assert running.progress.metrics == {"episode_reward": 1.5}
    assert running.progress.updated_at is not None
    release.set()
    done = manager.wait(job.job_id, WAIT_S)
    assert done.status == "succeeded" and done.error is None
    assert done.result == {"model_id": "rl-abc", "mean_reward": 2.0}
    assert done.finished_at is not None and done.started_at is not None and done.finished_at >= done.started_at
    assert done.progress.fraction == 1.0 and done.progress.message == "episode 3"  # message kept when not repeated
    assert done.progress.metrics == {"episode_reward": 2.0}


def test_domain_error_fails_job_with_its_code(manager: JobManager) -> None:
    def fn(ctx: JobContext) -> dict[str, Any]:
        raise InvalidInputError("timesteps must be positive", details=[{"loc": ["body", "timesteps"], "msg": "<= 0"}])

    done = manager.wait(manager.submit("rl_train", fn, params={}).job_id, WAIT_S)
    assert done.status == "failed" and done.result is None
    assert done.error is not None
    assert done.error.code == "invalid_input"
    assert done.error.message == "timesteps must be positive"
    assert done.error.details == [{"loc": ["body", "timesteps"], "msg": "<= 0"}]


def test_domain_error_details_get_the_body_location_when_raised_without_it(manager: JobManager) -> None:
    def fn(ctx: JobContext) -> dict[str, Any]:
        raise InvalidInputError("close has a gap", details=[{"loc": ["data", "close"], "msg": "not finite"}])

    done = manager.wait(manager.submit("ensemble_train", fn, params={}).job_id, WAIT_S)
    assert done.status == "failed" and done.error is not None and done.error.code == "invalid_input"
    assert done.error.details == [{"loc": ["body", "data", "close"], "msg": "not finite"}]  # as a 422 would say


def test_domain_error_details_that_are_not_located_are_stored_as_raised(manager: JobManager) -> None:
    def fn(ctx: JobContext) -> dict[str, Any]:
        raise NotFoundError("no model with id 'regime-x'", details={"model_id": "regime-x"})

    done = manager.wait(manager.submit("rl_train", fn, params={}).job_id, WAIT_S)
    assert done.error is not None and done.error.details == {"model_id": "regime-x"}


def test_unexpected_error_fails_job_as_internal_and_worker_runs_next(
    manager: JobManager, caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(ctx: JobContext) -> dict[str, Any]:
        raise RuntimeError("replay buffer exploded")

    with caplog.at_level(logging.ERROR, logger="quantcrew.ml_server"):
        failed = manager.wait(manager.submit("rl_train", boom, params={}).job_id, WAIT_S)
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "internal_error"
    assert failed.error.message == "RuntimeError: replay buffer exploded"
    logged = [r for r in caplog.records if r.name == "quantcrew.ml_server" and r.exc_info]
    assert logged and "replay buffer exploded" in str(logged[0].exc_info[1])  # type: ignore[index]
    nxt = manager.wait(manager.submit("rl_train", lambda ctx: {"n": 1}, params={}).job_id, WAIT_S)
    assert nxt.status == "succeeded" and nxt.result == {"n": 1}


def test_job_returning_non_dict_fails(manager: JobManager) -> None:
    done = manager.wait(manager.submit("x", lambda ctx: [1, 2], params={}).job_id, WAIT_S)  # type: ignore[arg-type,return-value]
    assert done.status == "failed" and done.error is not None and done.error.code == "internal_error"
    assert "list" in done.error.message


def test_cancel_queued_job_never_runs(manager: JobManager) -> None:
    started, release = threading.Event(), threading.Event()
    ran = threading.Event()
    blocker = manager.submit("rl_train", blocking(started, release), params={})
    assert started.wait(WAIT_S)

    def never(ctx: JobContext) -> dict[str, Any]:
        ran.set()
        return {}

    queued = manager.submit("rl_train", never, params={})
    cancelled = manager.cancel(queued.job_id)
    assert cancelled.status == "cancelled" and cancelled.cancel_requested and cancelled.finished_at is not None
    release.set()
    manager.wait(blocker.job_id, WAIT_S)
    after = manager.wait(manager.submit("rl_train", lambda ctx: {}, params={}).job_id, WAIT_S)
    assert after.status == "succeeded"  # the worker has gone past the cancelled job
    assert not ran.is_set()
    assert manager.get(queued.job_id).status == "cancelled"


def test_cancel_running_job_stays_running_until_fn_returns(manager: JobManager) -> None:
    started, release = threading.Event(), threading.Event()

    def fn(ctx: JobContext) -> dict[str, Any]:
        ctx.report(done=5, total=100, message="warming up")
        started.set()
        assert release.wait(WAIT_S)
        if ctx.cancelled:
            raise JobCancelled("stopped after 5 steps")
        return {"finished": True}

    job = manager.submit("rl_train", fn, params={})
    assert started.wait(WAIT_S)
    asked = manager.cancel(job.job_id)
    assert asked.status == "running" and asked.cancel_requested and asked.finished_at is None
    again = manager.cancel(job.job_id)  # asking twice is harmless
    assert again.status == "running" and again.cancel_requested
    release.set()
    done = manager.wait(job.job_id, WAIT_S)
    assert done.status == "cancelled" and done.cancel_requested and done.result is None and done.error is None
    assert (done.progress.done, done.progress.total) == (5, 100)  # partial progress kept
    assert done.progress.message == "stopped after 5 steps"


def test_cancel_running_job_that_polls_flag_and_returns_partial_result(manager: JobManager) -> None:
    started = threading.Event()

    def fn(ctx: JobContext) -> dict[str, Any]:
        step = 0
        while not ctx.cancelled:
            step += 1
            ctx.report(done=step, total=10_000)
            started.set()
            time.sleep(0.005)
        return {"steps_done": step}

    job = manager.submit("rl_train", fn, params={})
    assert started.wait(WAIT_S)
    t0 = time.monotonic()
    manager.cancel(job.job_id)
    done = manager.wait(job.job_id, WAIT_S)
    assert time.monotonic() - t0 < 2.0
    assert done.status == "cancelled"
    assert done.result is not None and done.result["steps_done"] >= 1
    assert done.progress.done == done.result["steps_done"]


def test_cancel_finished_job_conflicts(manager: JobManager) -> None:
    job = manager.submit("rl_train", lambda ctx: {}, params={})
    manager.wait(job.job_id, WAIT_S)
    with pytest.raises(ConflictError) as info:
        manager.cancel(job.job_id)
    assert info.value.message == f"job {job.job_id} already finished (succeeded); nothing to cancel"
    assert info.value.status_code == 409


def test_unknown_job_raises_not_found_naming_it(manager: JobManager) -> None:
    for call in (manager.get, manager.cancel, manager.wait):
        with pytest.raises(NotFoundError, match="job-doesnotexist"):
            call("job-doesnotexist")


def test_wait_times_out_on_running_job(manager: JobManager) -> None:
    started, release = threading.Event(), threading.Event()
    job = manager.submit("rl_train", blocking(started, release), params={})
    assert started.wait(WAIT_S)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match=job.job_id):
        manager.wait(job.job_id, timeout_s=0.1)
    assert time.monotonic() - t0 < 2.0
    release.set()
    assert manager.wait(job.job_id, WAIT_S).status == "succeeded"


def test_shutdown_cancels_running_and_queued_jobs_without_hanging(db_path: Path) -> None:
    jobs = JobManager(db_path)
    started = threading.Event()
    running = jobs.submit("rl_train", until_cancelled(started), params={})
    assert started.wait(WAIT_S)
    queued = jobs.submit("rl_train", lambda ctx: {}, params={})
    t0 = time.monotonic()
    jobs.shutdown(timeout_s=5.0)
    assert time.monotonic() - t0 < 2.0
    jobs.shutdown()  # idempotent
    with pytest.raises(ModelNotReadyError):
        jobs.submit("rl_train", lambda ctx: {}, params={})
    reopened = JobManager(db_path)
    try:
        stopped = reopened.get(running.job_id)
        assert stopped.status == "cancelled" and stopped.cancel_requested and stopped.progress.done >= 1
        assert reopened.get(queued.job_id).status == "cancelled"
    finally:
        reopened.shutdown()


def test_shutdown_records_job_ignoring_cancellation_as_interrupted(db_path: Path) -> None:
    jobs = JobManager(db_path)
    started, release = threading.Event(), threading.Event()
    job = jobs.submit("rl_train", blocking(started, release), params={})
    assert started.wait(WAIT_S)
    t0 = time.monotonic()
    jobs.shutdown(timeout_s=0.1)
    assert time.monotonic() - t0 < 2.0
    release.set()  # the job returns after the manager closed: nothing more is written
    time.sleep(0.05)
    reopened = JobManager(db_path)
    try:
        info = reopened.get(job.job_id)
        assert info.status == "interrupted" and info.error is not None
        assert info.error.message == INTERRUPTED_MESSAGE
    finally:
        reopened.shutdown()


def test_list_newest_first_with_filters_and_limit(manager: JobManager) -> None:
    a = manager.wait(manager.submit("rl_train", lambda ctx: {}, params={}).job_id, WAIT_S)
    b = manager.wait(manager.submit("walk_forward", lambda ctx: {}, params={}).job_id, WAIT_S)
    c = manager.wait(manager.submit("rl_train", lambda ctx: {"x": 1 / 0}, params={}).job_id, WAIT_S)
    assert [j.job_id for j in manager.list()] == [c.job_id, b.job_id, a.job_id]
    assert [j.job_id for j in manager.list(kind="rl_train")] == [c.job_id, a.job_id]
    assert [j.job_id for j in manager.list(status="failed")] == [c.job_id]
    assert [j.job_id for j in manager.list(kind="rl_train", status="succeeded")] == [a.job_id]
    assert [j.job_id for j in manager.list(limit=1)] == [c.job_id]
    assert manager.list(kind="nothing") == []


def test_workers_run_jobs_concurrently(db_path: Path) -> None:
    jobs = JobManager(db_path, workers=2)
    barrier = threading.Barrier(2, timeout=WAIT_S)

    def fn(ctx: JobContext) -> dict[str, Any]:
        return {"arrived": barrier.wait()}  # breaks (and fails the job) unless both run at once

    try:
        ids = [jobs.submit("rl_train", fn, params={}).job_id for _ in range(2)]
        assert {jobs.wait(i, WAIT_S).status for i in ids} == {"succeeded"}
    finally:
        jobs.shutdown()
