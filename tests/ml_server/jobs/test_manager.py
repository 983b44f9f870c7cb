"""The job manager: submit, read, cancel, wait and shut down, with real worker threads."""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta
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


# -- shared mode: several processes on one file ----------------------------------------------------------------

def _shared(db_path: Path, *, lease_s: float = 2.0) -> JobManager:
    """A shared-mode manager with quick rounds (heartbeat 0.1 s, polls 0.05 s)."""
    return JobManager(db_path, shared=True, heartbeat_s=0.1, lease_s=lease_s, poll_s=0.05)


_CHILD = """\
import sys, time
from pathlib import Path
from quantcrew.ml_server.jobs import JobManager

def forever(ctx):
    while True:
        ctx.report(done=1, total=2)
        time.sleep(0.01)

jobs = JobManager(Path(sys.argv[1]), shared=True)
running = jobs.submit("rl_train", forever, params={})
queued = jobs.submit("rl_train", forever, params={})
while jobs.get(running.job_id).status != "running":
    time.sleep(0.01)
print(running.job_id, queued.job_id, flush=True)
time.sleep(60)
"""


def test_shared_managers_read_and_cancel_each_others_jobs_and_leave_them_running(db_path: Path) -> None:
    a = _shared(db_path)
    started = threading.Event()
    b: JobManager | None = None
    try:
        running = a.submit("rl_train", until_cancelled(started), params={"n": 1})
        queued = a.submit("rl_train", lambda ctx: {"ran": True}, params={})
        assert started.wait(WAIT_S)
        b = _shared(db_path)  # starting beside A: A's jobs are not its to interrupt
        time.sleep(0.25)  # and B's keeper rounds leave them alone too
        seen = b.get(running.job_id)
        assert seen.status == "running" and seen.progress.done >= 1 and seen.params == {"n": 1}
        assert [j.job_id for j in b.list(status="running")] == [running.job_id]
        dropped = b.cancel(queued.job_id)  # queued on A: cancelled in the table at once, never started there
        assert dropped.status == "cancelled" and dropped.cancel_requested
        asked = b.cancel(running.job_id)  # running on A: A's keeper raises its cancel flag
        assert asked.status == "running" and asked.cancel_requested
        assert b.wait(running.job_id, WAIT_S).status == "cancelled"
        never = a.wait(queued.job_id, WAIT_S)
        assert never.status == "cancelled" and never.started_at is None and never.result is None
        with pytest.raises(ConflictError, match="already finished"):
            b.cancel(running.job_id)
        b.shutdown()  # a clean stop of one replica touches only its own jobs
        b = None
        later = a.submit("rl_train", lambda ctx: {"ok": 1}, params={})
        assert a.wait(later.job_id, WAIT_S).status == "succeeded"
    finally:
        if b is not None:
            b.shutdown()
        a.shutdown()


def test_a_shared_manager_starting_interrupts_the_jobs_of_a_killed_process_only(db_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    from quantcrew.ml_server.jobs.owner import JobOwner
    from quantcrew.ml_server.jobs.store import JobStore

    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(db_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        running, queued = child.stdout.readline().split()
    finally:
        os.kill(child.pid, signal.SIGKILL)  # a crash: nothing of its own shutdown runs
        child.wait(10)
    store = JobStore(db_path)  # two rows of a live owner on another node: one beating, one silent past its lease
    beating, silent = JobOwner(host="node-2/pid:[1]", pid=1), JobOwner(host="node-3/pid:[1]", pid=1)
    now = datetime.now(UTC)
    store.insert("job-000000000000beat", "rl_train", now, "{}", beating)
    store.insert("job-0000000000silent", "rl_train", now, "{}", silent)
    store._db.execute("update jobs set heartbeat_at = ? where job_id = 'job-0000000000silent'",  # noqa: SLF001
                      ((now - timedelta(minutes=5)).isoformat(),))
    store._db.commit()  # noqa: SLF001
    store.close()
    jobs = JobManager(db_path, shared=True, lease_s=60.0)
    try:
        for job_id in (running, queued, "job-0000000000silent"):
            info = jobs.get(job_id)
            assert info.status == "interrupted" and info.finished_at is not None, job_id
            assert info.error is not None and info.error.message == INTERRUPTED_MESSAGE
        assert jobs.get(running).progress.done == 1  # what it had reported stays
        assert jobs.get("job-000000000000beat").status == "queued"  # its owner is alive elsewhere
    finally:
        jobs.shutdown()


def test_the_keeper_moves_the_heartbeat_and_interrupts_an_orphan_while_it_runs(db_path: Path) -> None:
    from quantcrew.ml_server.jobs.owner import JobOwner
    from quantcrew.ml_server.jobs.store import JobStore
    from tests.ml_server.jobs.support import raw_row

    jobs = _shared(db_path, lease_s=0.5)
    started = threading.Event()
    store = JobStore(db_path)
    try:
        mine = jobs.submit("rl_train", until_cancelled(started), params={})
        assert started.wait(WAIT_S)
        first = raw_row(db_path, mine.job_id)["heartbeat_at"]
        # an owner on another node that stops beating once this manager is already running
        store.insert("job-00000000000other", "rl_train", datetime.now(UTC), "{}", JobOwner(host="node-2", pid=1))
        deadline = time.monotonic() + WAIT_S
        while jobs.get("job-00000000000other").status != "interrupted":
            assert time.monotonic() < deadline, "the orphan was never interrupted"
            time.sleep(0.05)
        assert raw_row(db_path, mine.job_id)["heartbeat_at"] > first  # ours kept beating
        assert jobs.get(mine.job_id).status == "running"
    finally:
        store.close()
        jobs.shutdown()


def test_an_exclusive_manager_leaves_another_process_job_to_its_owner(db_path: Path) -> None:
    from quantcrew.ml_server.jobs.store import JobStore

    jobs = JobManager(db_path)
    store = JobStore(db_path)  # a row this manager does not run (written after it started)
    store.insert("job-00000000elsewhere", "rl_train", datetime.now(UTC), "{}")
    store.close()
    try:
        with pytest.raises(ConflictError, match="another server process") as err:
            jobs.cancel("job-00000000elsewhere")
        assert err.value.details == {"job_id": "job-00000000elsewhere", "status": "queued"}
    finally:
        jobs.shutdown()


@pytest.mark.parametrize(("heartbeat_s", "lease_s", "poll_s"), [(5.0, 5.0, 0.5), (0.0, 60.0, 0.5), (5.0, 60.0, 0.0)])
def test_shared_timings_out_of_order_are_refused(db_path: Path, heartbeat_s: float, lease_s: float,
                                                 poll_s: float) -> None:
    with pytest.raises(ValueError, match="heartbeat_s"):
        JobManager(db_path, shared=True, heartbeat_s=heartbeat_s, lease_s=lease_s, poll_s=poll_s)
