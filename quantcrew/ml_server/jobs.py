"""Long-running work (RL training, walk-forward training) as jobs: submitted, polled, cancelled.

A route validates its input synchronously, then hands a function to :meth:`JobManager.submit`
and replies with the job's :class:`~quantcrew.ml_server.schemas.jobs.JobInfo` at once. The
function runs on a worker thread, independent of any request, so the server carries on when
the client that started it goes away.

Jobs are recorded in the ``jobs`` table of the registry's SQLite file (a connection of their
own, WAL, one lock), so finished jobs stay readable after a restart; jobs a previous process
left ``queued`` or ``running`` are marked ``interrupted`` when the next one starts. Progress
reports are kept in memory on every call and written at most every
:data:`REPORT_INTERVAL_S` seconds (the last one always), so a training loop may report on
every step. Workers are daemon threads: a job that ignores cancellation can delay
:meth:`JobManager.shutdown` by its timeout, never hang the process on exit.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from quantcrew.ml_server.errors import ConflictError, MLServerError, ModelNotReadyError, NotFoundError
from quantcrew.ml_server.handlers import with_location
from quantcrew.ml_server.schemas.common import ErrorDetail
from quantcrew.ml_server.schemas.jobs import FINISHED_STATUSES, JobInfo, JobProgress

__all__ = ["INTERRUPTED_MESSAGE", "REPORT_INTERVAL_S", "JobCancelled", "JobContext", "JobFn", "JobManager"]

logger = logging.getLogger("quantcrew.ml_server")

REPORT_INTERVAL_S = 0.5
"""Least time between two progress writes to the database for one job."""

INTERRUPTED_MESSAGE = "the server stopped before this job finished"

_SCHEMA = """
create table if not exists jobs (
    job_id text primary key,
    kind text not null,
    status text not null,
    cancel_requested integer not null default 0,
    created_at text not null,
    started_at text,
    finished_at text,
    done integer not null default 0,
    total integer not null default 0,
    message text,
    metrics text not null default '{}',
    progress_at text,
    params text not null default '{}',
    result text,
    error text
)
"""


class JobCancelled(Exception):
    """Raised by a job function that has seen :attr:`JobContext.cancelled`; the job ends 'cancelled'.

    A message, when given, becomes the job's last progress message.
    """


class JobContext:
    """What a running job sees: its id, a progress reporter and the cancel flag.

    The manager builds one per job. A test of a job function can build one directly
    (``JobContext("job-test")``), call the function, and read :attr:`progress` afterwards.

    Args:
        job_id: The job's id.
        on_persist: Called with this context when a report should be written (throttled).
        interval_s: Least time between two ``on_persist`` calls.
    """

    def __init__(self, job_id: str, *, on_persist: Callable[[JobContext], None] | None = None,
                 interval_s: float = REPORT_INTERVAL_S) -> None:
        self.job_id = job_id
        self._on_persist = on_persist
        self._interval_s = interval_s
        self._cancel = threading.Event()
        self._progress = JobProgress(done=0, total=0, fraction=0.0)
        self._last_persist = -math.inf

    def report(self, *, done: int, total: int, message: str | None = None,
               metrics: dict[str, float] | None = None) -> None:
        """Record progress; cheap enough to call on every step.

        Args:
            done: Units of work done (clipped at 0).
            total: Units of work in all (0 while unknown).
            message: A note for a person; None keeps the previous one.
            metrics: Latest metric values, merged into those reported before. NaN and
                infinite values are skipped (JSON cannot carry them).
        """
        merged = dict(self._progress.metrics)
        for key, value in (metrics or {}).items():
            number = float(value)
            if math.isfinite(number):
                merged[str(key)] = number
        done, total = max(0, int(done)), max(0, int(total))
        # one reference swap: readers on other threads see the old or the new report, never half of one
        self._progress = JobProgress(
            done=done, total=total, fraction=_fraction(done, total),
            message=message if message is not None else self._progress.message,
            metrics=merged, updated_at=datetime.now(UTC),
        )
        now = time.monotonic()
        if self._on_persist is not None and now - self._last_persist >= self._interval_s:
            self._last_persist = now
            self._on_persist(self)

    @property
    def cancelled(self) -> bool:
        """True once cancellation was requested; the function should stop soon after."""
        return self._cancel.is_set()

    @property
    def progress(self) -> JobProgress:
        """The latest report (whether or not it was written yet)."""
        return self._progress

    def request_cancel(self) -> None:
        """Set the cancel flag (the manager does this on :meth:`JobManager.cancel`)."""
        self._cancel.set()


JobFn = Callable[[JobContext], dict[str, Any]]
"""A job: takes its context, returns a JSON-able result dict."""

_Outcome = tuple[str, dict[str, Any] | None, dict[str, Any] | None]  # status, result, error


@dataclass(eq=False)
class _Job:
    """A job this process owns, from submit until it finishes."""

    job_id: str
    kind: str
    fn: JobFn
    ctx: JobContext
    status: str = "queued"
    finished: threading.Event = field(default_factory=threading.Event)


class JobManager:
    """Runs jobs on worker threads and records them in the ``jobs`` table of ``db_path``.

    Args:
        db_path: SQLite file (the model registry's); the table is created if missing.
        workers: Jobs run at once; more wait queued, first in first out.
    """

    def __init__(self, db_path: Path, *, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.db_path = Path(db_path)
        self.workers = workers
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("pragma journal_mode=wal")
        with self._db:
            self._db.execute(_SCHEMA)
            self._db.execute("create index if not exists jobs_created_at on jobs (created_at)")
            stale = self._db.execute(
                "update jobs set status = 'interrupted', finished_at = ?, error = ? "
                "where status in ('queued', 'running')",
                (_now(), _dumps(_error("interrupted", INTERRUPTED_MESSAGE))),
            ).rowcount
        if stale:
            logger.warning("%d job(s) left unfinished by a previous server process marked interrupted", stale)
        self._jobs: dict[str, _Job] = {}
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._closed = False

    # -- submitting and reading ---------------------------------------------------------------

    def submit(self, kind: str, fn: JobFn, *, params: dict[str, Any]) -> JobInfo:
        """Queue ``fn`` as a new job and return its entry as submitted (status 'queued').

        Args:
            kind: What the job does, e.g. 'rl_train'.
            fn: The work; called once on a worker thread with the job's :class:`JobContext`.
            params: A JSON-able summary of the inputs, stored and shown with the job.

        Raises:
            ValueError: ``params`` cannot be stored as JSON.
            ModelNotReadyError: the manager is shutting down (503).
        """
        params_json = _dumps(params, what=f"params of a '{kind}' job")
        job_id = f"job-{uuid.uuid4().hex[:16]}"
        job = _Job(job_id, kind, fn, JobContext(job_id, on_persist=self._persist_progress))
        created = datetime.now(UTC)
        # built before the job is queued: a fast job may be running by the time this returns
        info = JobInfo(job_id=job_id, kind=kind, status="queued", cancel_requested=False, created_at=created,
                       progress=job.ctx.progress, params=json.loads(params_json))
        with self._lock:
            if self._closing:
                raise ModelNotReadyError("the server is shutting down: no new jobs are accepted")
            with self._db:
                self._db.execute("insert into jobs (job_id, kind, status, created_at, params) values (?, ?, ?, ?, ?)",
                                 (job_id, kind, "queued", _iso(created), params_json))
            self._jobs[job_id] = job
            while len(self._threads) < self.workers:
                thread = threading.Thread(target=self._work, name=f"quantcrew-job-{len(self._threads)}", daemon=True)
                thread.start()
                self._threads.append(thread)
            self._queue.put(job)
        logger.info("job %s (%s) queued", job_id, kind)
        return info

    def get(self, job_id: str) -> JobInfo:
        """The job's entry, with the latest progress; :class:`NotFoundError` (404) if unknown."""
        with self._lock:
            row = self._select("where job_id = ?", (job_id,))
            job = self._jobs.get(job_id)
        if not row:
            raise NotFoundError(f"no job with id '{job_id}'", details={"job_id": job_id})
        return _info(row[0], job)

    def list(self, *, kind: str | None = None, status: str | None = None, limit: int = 100) -> list[JobInfo]:
        """Jobs newest first, optionally of one kind and/or one status, at most ``limit``."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        clauses, args = [], []
        for column, value in (("kind", kind), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = ("where " + " and ".join(clauses)) if clauses else ""
        with self._lock:
            rows = self._select(f"{where} order by created_at desc, rowid desc limit ?", (*args, limit))
            live = {row["job_id"]: self._jobs.get(row["job_id"]) for row in rows}
        return [_info(row, live[row["job_id"]]) for row in rows]

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a job: a queued one at once, a running one at its next check of the flag.

        A running job stays 'running' with ``cancel_requested`` true until its function
        returns, then becomes 'cancelled'.

        Raises:
            NotFoundError: unknown id (404).
            ConflictError: the job already finished (409).
        """
        with self._lock:
            row = self._select("where job_id = ?", (job_id,))
            if not row:
                raise NotFoundError(f"no job with id '{job_id}'", details={"job_id": job_id})
            status = row[0]["status"]
            if status in FINISHED_STATUSES:
                raise ConflictError(f"job {job_id} already finished ({status}); nothing to cancel",
                                    details={"job_id": job_id, "status": status})
            job = self._jobs.get(job_id)
            if job is None:
                raise ConflictError(f"job {job_id} is {status} in another server process using this database; "
                                    "cancel it there", details={"job_id": job_id, "status": status})
            if job.status == "queued":
                self._cancel_queued(job)
                logger.info("job %s (%s) cancelled before it started", job_id, job.kind)
            else:
                self._request_cancel(job)
                logger.info("job %s (%s) asked to stop", job_id, job.kind)
            return self.get(job_id)

    def wait(self, job_id: str, timeout_s: float | None = None) -> JobInfo:
        """Block until the job has finished and return its entry.

        Raises:
            NotFoundError: unknown id.
            TimeoutError: still not finished after ``timeout_s`` seconds.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._lock:
                job = self._jobs.get(job_id)
            if job is not None:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                job.finished.wait(remaining)
            info = self.get(job_id)
            if info.status in FINISHED_STATUSES:
                return info
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout_s} s (status {info.status})")
            if job is None:
                time.sleep(0.05)  # run by another process: all we can do is poll its row

    def shutdown(self, *, timeout_s: float = 10.0) -> None:
        """Cancel queued and running jobs, wait up to ``timeout_s`` for them, close the database.

        A job still running after the timeout is recorded 'interrupted' and left to its daemon
        thread; whatever it does later is not recorded. Calling this again does nothing.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            running = []
            for job in list(self._jobs.values()):
                if job.status == "queued":
                    self._cancel_queued(job)
                else:
                    self._request_cancel(job)
                    running.append(job)
            for _ in self._threads:
                self._queue.put(None)
        deadline = time.monotonic() + timeout_s
        for job in running:
            job.finished.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            stuck = list(self._jobs.values())
            for job in stuck:
                self._write_outcome(job, "interrupted", None, _error("interrupted", INTERRUPTED_MESSAGE))
            self._closed = True
            self._db.close()
        if stuck:
            logger.warning("%d job(s) did not stop within %.1f s of shutdown; recorded as interrupted: %s",
                           len(stuck), timeout_s, ", ".join(j.job_id for j in stuck))
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- workers ------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run(job)

    def _run(self, job: _Job) -> None:
        with self._lock:
            if job.status != "queued" or self._closing:
                return  # cancelled while it waited
            job.status = "running"
            with self._db:
                self._db.execute("update jobs set status = 'running', started_at = ? where job_id = ?",
                                 (_now(), job.job_id))
        logger.info("job %s (%s) started", job.job_id, job.kind)
        started = time.monotonic()
        outcome: _Outcome = ("failed", None, _error("internal_error", "the job stopped without an outcome"))
        try:
            outcome = self._call(job)
        finally:
            with self._lock:
                self._write_outcome(job, *outcome)
            logger.info("job %s (%s) %s after %.2f s", job.job_id, job.kind, outcome[0], time.monotonic() - started)

    def _call(self, job: _Job) -> _Outcome:
        try:
            out = job.fn(job.ctx)
        except JobCancelled as exc:
            if str(exc):  # e.g. what was kept before it stopped: shown as the last progress note
                p = job.ctx.progress
                job.ctx.report(done=p.done, total=p.total, message=str(exc))
            return "cancelled", None, None
        except MLServerError as exc:
            # services name body fields without the HTTP part; a job's error reaches the client
            # through GET /v1/jobs/{id}, not the error handler, so it is located here the same way
            return "failed", None, _error(exc.code, exc.message, with_location(exc.details))
        except (Exception, SystemExit) as exc:
            # The job boundary: a bug in one job fails that job, never the worker thread.
            logger.exception("job %s (%s) raised", job.job_id, job.kind)
            return "failed", None, _error("internal_error", f"{type(exc).__name__}: {exc}")
        if not isinstance(out, dict):
            return "failed", None, _error("internal_error", f"the job returned a {type(out).__name__}, not a dict")
        try:
            result = json.loads(_dumps(out, what="the job's result"))
        except ValueError as exc:
            logger.error("job %s (%s): %s", job.job_id, job.kind, exc)
            return "failed", None, _error("internal_error", str(exc))
        return ("cancelled" if job.ctx.cancelled else "succeeded"), result, None

    # -- database (callers hold the lock) -----------------------------------------------------

    def _select(self, tail: str, args: tuple[Any, ...]) -> Sequence[sqlite3.Row]:
        if self._closed:
            raise ModelNotReadyError("the job manager is shut down")
        return self._db.execute(f"select * from jobs {tail}", args).fetchall()

    def _cancel_queued(self, job: _Job) -> None:
        job.ctx.request_cancel()
        with self._db:
            self._db.execute("update jobs set cancel_requested = 1 where job_id = ?", (job.job_id,))
        self._write_outcome(job, "cancelled", None, None)

    def _request_cancel(self, job: _Job) -> None:
        job.ctx.request_cancel()
        with self._db:
            self._db.execute("update jobs set cancel_requested = 1 where job_id = ?", (job.job_id,))

    def _write_outcome(self, job: _Job, status: str, result: dict[str, Any] | None,
                       error: dict[str, Any] | None) -> None:
        if job.finished.is_set():
            return  # already recorded (e.g. interrupted at shutdown)
        job.status = status
        if not self._closed:
            try:
                with self._db:
                    self._db.execute(
                        "update jobs set status = ?, finished_at = ?, result = ?, error = ? where job_id = ?",
                        (status, _now(), None if result is None else _dumps(result),
                         None if error is None else _dumps(error), job.job_id))
                    self._write_progress(job.ctx)
            except sqlite3.Error:
                logger.exception("could not record the outcome (%s) of job %s", status, job.job_id)
        self._jobs.pop(job.job_id, None)
        job.finished.set()

    def _write_progress(self, ctx: JobContext) -> None:
        p = ctx.progress
        self._db.execute(
            "update jobs set done = ?, total = ?, message = ?, metrics = ?, progress_at = ? where job_id = ?",
            (p.done, p.total, p.message, json.dumps(p.metrics), _iso(p.updated_at), ctx.job_id))

    def _persist_progress(self, ctx: JobContext) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                with self._db:
                    self._write_progress(ctx)
            except sqlite3.Error as exc:  # progress is advisory: never fail a job over it
                logger.warning("could not record progress of job %s: %s", ctx.job_id, exc)


# -- helpers ----------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="microseconds")


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _fraction(done: int, total: int) -> float:
    return min(1.0, done / total) if total > 0 else 0.0


def _error(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": _jsonable(details, strict=False)}


def _jsonable(value: Any, *, strict: bool = True) -> Any:
    """Plain JSON types: numpy values unwrapped, times as ISO text, NaN and infinity as None.

    Anything else is a TypeError when ``strict``, its ``str()`` otherwise.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(k, strict): _jsonable(v, strict=strict) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, strict=strict) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy
        return _jsonable(value.tolist(), strict=strict)
    if strict:
        raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
    return str(value)


def _key(key: Any, strict: bool) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) or not strict:
        return str(key)
    raise TypeError(f"dict key {key!r} ({type(key).__name__}) is not a string")


def _dumps(value: Any, *, what: str = "value") -> str:
    try:
        return json.dumps(_jsonable(value), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{what} cannot be stored as JSON: {exc}") from exc


def _info(row: sqlite3.Row, job: _Job | None) -> JobInfo:
    if job is not None:
        progress = job.ctx.progress  # fresher than the throttled row
    else:
        progress = JobProgress(done=row["done"], total=row["total"], fraction=_fraction(row["done"], row["total"]),
                               message=row["message"], metrics=json.loads(row["metrics"]),
                               updated_at=_time(row["progress_at"]))
    error = json.loads(row["error"]) if row["error"] else None
    created = _time(row["created_at"])
    assert created is not None  # not null in the table
    return JobInfo(
        job_id=row["job_id"], kind=row["kind"], status=row["status"], cancel_requested=bool(row["cancel_requested"]),
        created_at=created, started_at=_time(row["started_at"]), finished_at=_time(row["finished_at"]),
        progress=progress, params=json.loads(row["params"]),
        result=None if row["result"] is None else json.loads(row["result"]),
        error=None if error is None else ErrorDetail(**error),
    )
