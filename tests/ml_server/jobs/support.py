"""Job functions and a raw table read shared by the job tests."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from quantcrew.ml_server.jobs import JobCancelled, JobContext, JobFn

WAIT_S = 5.0  # upper bound for events in tests; each test finishes far sooner


def blocking(started: threading.Event, release: threading.Event, result: dict[str, Any] | None = None) -> JobFn:
    """A job that says it started, then waits for the test (ignoring cancellation)."""

    def fn(ctx: JobContext) -> dict[str, Any]:
        started.set()
        assert release.wait(WAIT_S), "the test never released the job"
        return result or {"ok": True}

    return fn


def until_cancelled(started: threading.Event) -> JobFn:
    """A job that reports progress and polls the cancel flag, as a training loop would."""

    def fn(ctx: JobContext) -> dict[str, Any]:
        step = 0
        while not ctx.cancelled:
            step += 1
            ctx.report(done=step, total=1_000_000)
            started.set()
            time.sleep(0.005)
        raise JobCancelled

    return fn


def raw_row(db_path: Path, job_id: str) -> sqlite3.Row:
    with sqlite3.connect(db_path) as conn:
        conn.row_factory = sqlite3.Row
        row: sqlite3.Row | None = conn.execute("select * from jobs where job_id = ?", (job_id,)).fetchone()
    assert row is not None
    return row
