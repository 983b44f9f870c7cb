"""The jobs table: what survives a restart, which progress reports are written, rows as entries."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from quantcrew.ml_server.errors import ConflictError, ModelNotReadyError
from quantcrew.ml_server.jobs import INTERRUPTED_MESSAGE, JobContext, JobManager
from quantcrew.ml_server.jobs.store import JobStore, error_record, job_info
from quantcrew.ml_server.schemas.jobs import JobProgress
from tests.ml_server.jobs.support import WAIT_S, blocking, raw_row


def test_restart_marks_unfinished_jobs_interrupted_and_keeps_finished(db_path: Path) -> None:
    first = JobManager(db_path)
    started, release = threading.Event(), threading.Event()
    try:
        done = first.wait(first.submit("rl_train", lambda ctx: {"model_id": "rl-1"}, params={"a": 1}).job_id, WAIT_S)
        running = first.submit("rl_train", blocking(started, release), params={})
        assert started.wait(WAIT_S)
        queued = first.submit("rl_train", lambda ctx: {}, params={})
        # a second process opening the file sees what a crashed one left behind
        second = JobManager(db_path)
        for job_id in (running.job_id, queued.job_id):
            info = second.get(job_id)
            assert info.status == "interrupted" and info.finished_at is not None
            assert info.error is not None and info.error.code == "interrupted"
            assert info.error.message == INTERRUPTED_MESSAGE
        kept = second.get(done.job_id)
        assert kept.status == "succeeded" and kept.result == {"model_id": "rl-1"} and kept.params == {"a": 1}
        with pytest.raises(ConflictError, match=r"already finished \(interrupted\)"):
            second.cancel(running.job_id)
        second.shutdown(timeout_s=1.0)
    finally:
        first.shutdown(timeout_s=0.0)
        release.set()


def test_report_throttles_writes_but_persists_final_report(manager: JobManager, db_path: Path) -> None:
    reported, release = threading.Event(), threading.Event()

    def fn(ctx: JobContext) -> dict[str, Any]:
        for step in range(1, 51):
            ctx.report(done=step, total=100, message=f"step {step}")
        reported.set()
        assert release.wait(WAIT_S)
        for step in range(51, 101):
            ctx.report(done=step, total=100, message=f"step {step}")
        return {}

    job = manager.submit("rl_train", fn, params={})
    assert reported.wait(WAIT_S)
    row = raw_row(db_path, job.job_id)
    assert (row["done"], row["message"]) == (1, "step 1")  # only the first of 50 quick reports was written
    assert manager.get(job.job_id).progress.done == 50  # readers still see the latest
    release.set()
    manager.wait(job.job_id, WAIT_S)
    row = raw_row(db_path, job.job_id)
    assert (row["done"], row["total"], row["message"]) == (100, 100, "step 100")


def test_store_rows_read_back_as_entries_and_reads_stop_once_closed(db_path: Path) -> None:
    store = JobStore(db_path)
    created = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    store.insert("job-0000000000000001", "rl_train", created, '{"timesteps": 64}')
    store.mark_running("job-0000000000000001")
    store.write_progress("job-0000000000000001",
                         JobProgress(done=3, total=4, fraction=0.75, message="step 3", metrics={"reward": 1.5}))
    row = store.row("job-0000000000000001")
    assert row is not None and store.row("job-unknown") is None
    info = job_info(row)
    assert (info.status, info.kind, info.created_at, info.params) == ("running", "rl_train", created, {"timesteps": 64})
    assert info.started_at is not None and info.finished_at is None
    assert (info.progress.done, info.progress.fraction, info.progress.message) == (3, 0.75, "step 3")
    live = JobProgress(done=4, total=4, fraction=1.0)
    assert job_info(row, live).progress == live  # the running job's own report wins over the throttled row
    store.write_outcome("job-0000000000000001", "failed", None, error_record("internal_error", "boom", {1: object}),
                        live)
    failed = job_info(store.rows(status="failed")[0])
    assert failed.error is not None and failed.error.code == "internal_error"
    assert failed.error.details == {"1": str(object)}
    assert failed.finished_at is not None and failed.progress.done == 4
    assert [r["job_id"] for r in store.rows(kind="walk_forward")] == []
    assert store.interrupt_unfinished(error_record("interrupted", "gone")) == 0  # nothing left unfinished
    store.close()
    assert store.closed
    with pytest.raises(ModelNotReadyError, match="shut down"):
        store.row("job-0000000000000001")


def test_a_jobs_table_written_before_owners_gets_their_columns_and_keeps_its_rows(db_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(db_path) as conn:  # the table as an earlier version wrote it
        conn.execute("create table jobs (job_id text primary key, kind text not null, status text not null, "
                     "cancel_requested integer not null default 0, created_at text not null, started_at text, "
                     "finished_at text, done integer not null default 0, total integer not null default 0, "
                     "message text, metrics text not null default '{}', progress_at text, "
                     "params text not null default '{}', result text, error text)")
        conn.execute("insert into jobs (job_id, kind, status, created_at, params) values "
                     "('job-00000000000older', 'rl_train', 'running', '2024-05-06T07:08:09+00:00', '{\"a\": 1}')")
    conn.close()
    jobs = JobManager(db_path, shared=True)  # a row with no owner: its server is gone
    try:
        old = jobs.get("job-00000000000older")
        assert old.status == "interrupted" and old.params == {"a": 1}
        new = jobs.wait(jobs.submit("rl_train", lambda ctx: {"ok": True}, params={}).job_id, WAIT_S)
        assert new.status == "succeeded"
        row = raw_row(db_path, new.job_id)
        assert row["owner"] == jobs.owner.owner and row["owner_pid"] == jobs.owner.pid
        assert row["owner_host"] == jobs.owner.host and row["heartbeat_at"] is not None
    finally:
        jobs.shutdown()
    again = JobStore(db_path)  # opened again: the columns are there, nothing is added twice
    assert again.row("job-00000000000older") is not None
    again.close()
