"""The job manager: worker threads that run submitted jobs, and the calls that read and cancel them.

A route validates its input synchronously, then hands a function to :meth:`JobManager.submit`
and replies with the job's :class:`~quantcrew.ml_server.schemas.jobs.JobInfo` at once. The
function runs on a worker thread, independent of any request, so the server carries on when
the client that started it goes away.

Every job is recorded in the ``jobs`` table (:mod:`quantcrew.ml_server.jobs.store`) with its
owner, the manager that runs it (:mod:`quantcrew.ml_server.jobs.owner`). Workers are daemon
threads: a job that ignores cancellation can delay :meth:`JobManager.shutdown` by its timeout,
never hang the process on exit.

Jobs left unfinished by a process that is gone are marked ``interrupted``. How a manager knows
which are gone depends on how its server holds the home:

* **exclusive** (the default; one server per home, enforced by the home's lock): no other live
  process can own a job, so every job left ``queued`` or ``running`` is marked ``interrupted``
  when the manager starts.
* **shared** (``shared=True``: replicas of one deployment on one registry). A manager marks
  ``interrupted`` only the jobs whose owner is gone (:func:`~quantcrew.ml_server.jobs.owner.owner_gone`:
  no owner recorded, a dead PID on this host, or a heartbeat older than ``lease_s``), when it
  starts and again every ``poll_s`` while it runs, so a replica that crashed does not leave its
  jobs ``running``: on one host they are marked within ``poll_s`` of the crash, across hosts
  within ``lease_s``. A keeper thread moves the heartbeat of the manager's own unfinished jobs
  every ``heartbeat_s`` and, every ``poll_s``, picks up cancels that another replica recorded
  (``cancel_requested``). Any replica answers for any job from the table:
  reading it (status, progress as last written, result), waiting for it (by polling the row) and
  cancelling it: a queued job is marked ``cancelled`` in its row at once (its owner never starts a
  job that is no longer queued there), a running one gets ``cancel_requested`` in its row and its
  owner raises the job's cancel flag within ``poll_s``, as a cancel on the owner would.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantcrew.ml_server.errors import ConflictError, MLServerError, ModelNotReadyError, NotFoundError
from quantcrew.ml_server.handlers import with_location
from quantcrew.ml_server.jobs.context import JobCancelled, JobContext, JobFn
from quantcrew.ml_server.jobs.jsonable import dumps
from quantcrew.ml_server.jobs.owner import JobOwner, owner_gone
from quantcrew.ml_server.jobs.store import JobStore, error_record, job_info
from quantcrew.ml_server.schemas.jobs import FINISHED_STATUSES, JobInfo, JobProgress

__all__ = ["INTERRUPTED_MESSAGE", "JobManager"]

logger = logging.getLogger("quantcrew.ml_server")

INTERRUPTED_MESSAGE = "the server stopped before this job finished"
HEARTBEAT_S = 5.0
"""Shared mode: how often a manager moves the heartbeat of its unfinished jobs."""
LEASE_S = 60.0
"""Shared mode: how old an owner's heartbeat may be before its unfinished jobs are marked interrupted."""
POLL_S = 0.5
"""Shared mode: how often a manager looks for cancels of its jobs recorded by another process, and for jobs whose
owner is gone (two reads)."""

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
        shared: Other server processes share the file (see the module docstring).
        heartbeat_s: Shared mode: the heartbeat interval.
        lease_s: Shared mode: the age of a heartbeat past which its owner is gone (well above
            ``heartbeat_s``).
        poll_s: Shared mode: how often cancels recorded by other processes, and orphaned jobs, are looked for.
    """

    def __init__(self, db_path: Path, *, workers: int = 1, shared: bool = False, heartbeat_s: float = HEARTBEAT_S,
                 lease_s: float = LEASE_S, poll_s: float = POLL_S) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if not 0 < heartbeat_s < lease_s or poll_s <= 0:
            raise ValueError(f"need 0 < heartbeat_s < lease_s and poll_s > 0, got heartbeat_s={heartbeat_s}, "
                             f"lease_s={lease_s}, poll_s={poll_s}")
        self.db_path = Path(db_path)
        self.workers = workers
        self.shared = shared
        self.heartbeat_s, self.lease_s, self.poll_s = heartbeat_s, lease_s, poll_s
        self.owner = JobOwner()
        # one lock over the in-memory jobs and the table, so the two never disagree
        self._lock = threading.RLock()
        self._store = JobStore(self.db_path)
        self._jobs: dict[str, _Job] = {}
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._stop = threading.Event()
        self._keeper: threading.Thread | None = None
        if shared:
            stale = self.interrupt_orphans()
            if stale:
                logger.warning("%d job(s) left unfinished by server processes that are gone marked interrupted",
                               stale)
            self._keeper = threading.Thread(target=self._keep, name="quantcrew-job-keeper", daemon=True)
            self._keeper.start()
        else:
            stale = self._store.interrupt_unfinished(error_record("interrupted", INTERRUPTED_MESSAGE))
            if stale:
                logger.warning("%d job(s) left unfinished by a previous server process marked interrupted", stale)

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
        params_json = dumps(params, what=f"params of a '{kind}' job")
        job_id = f"job-{uuid.uuid4().hex[:16]}"
        job = _Job(job_id, kind, fn, JobContext(job_id, on_persist=self._persist_progress))
        created = datetime.now(UTC)
        # built before the job is queued: a fast job may be running by the time this returns
        info = JobInfo(job_id=job_id, kind=kind, status="queued", cancel_requested=False, created_at=created,
                       progress=job.ctx.progress, params=json.loads(params_json))
        with self._lock:
            if self._closing:
                raise ModelNotReadyError("the server is shutting down: no new jobs are accepted")
            self._store.insert(job_id, kind, created, params_json, self.owner)
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
            row = self._store.row(job_id)
            job = self._jobs.get(job_id)
        if row is None:
            raise NotFoundError(f"no job with id '{job_id}'", details={"job_id": job_id})
        return job_info(row, _live(job))

    def list(self, *, kind: str | None = None, status: str | None = None, limit: int = 100) -> list[JobInfo]:
        """Jobs newest first, optionally of one kind and/or one status, at most ``limit``."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._lock:
            rows = self._store.rows(kind=kind, status=status, limit=limit)
            live = {row["job_id"]: self._jobs.get(row["job_id"]) for row in rows}
        return [job_info(row, _live(live[row["job_id"]])) for row in rows]

    def cancel(self, job_id: str) -> JobInfo:
        """Cancel a job: a queued one at once, a running one at its next check of the flag.

        A running job stays 'running' with ``cancel_requested`` true until its function
        returns, then becomes 'cancelled'.

        Raises:
            NotFoundError: unknown id (404).
            ConflictError: the job already finished (409).
        """
        with self._lock:
            row = self._store.row(job_id)
            if row is None:
                raise NotFoundError(f"no job with id '{job_id}'", details={"job_id": job_id})
            status = row["status"]
            if status in FINISHED_STATUSES:
                raise ConflictError(f"job {job_id} already finished ({status}); nothing to cancel",
                                    details={"job_id": job_id, "status": status})
            job = self._jobs.get(job_id)
            if job is None:
                return self._cancel_elsewhere(row)
            if job.status == "queued":
                self._cancel_queued(job)
                logger.info("job %s (%s) cancelled before it started", job_id, job.kind)
            else:
                self._request_cancel(job)
                logger.info("job %s (%s) asked to stop", job_id, job.kind)
            return self.get(job_id)

    def _cancel_elsewhere(self, row: sqlite3.Row) -> JobInfo:
        """Cancel a job that another process owns (lock held): recorded in its row for the owner to act on."""
        job_id, status = row["job_id"], row["status"]
        if not self.shared:
            raise ConflictError(f"job {job_id} is {status} in another server process using this database; "
                                "cancel it there", details={"job_id": job_id, "status": status})
        if self._store.cancel_queued(job_id):  # its owner will not start it (see _run)
            logger.info("job %s (%s) of %s cancelled before it started", job_id, row["kind"], row["owner"])
        elif self._interrupt_if_orphaned(row) or not self._store.mark_cancel_requested(job_id):
            now = self.get(job_id)  # its owner is gone (just marked), or it finished meanwhile
            raise ConflictError(f"job {job_id} already finished ({now.status}); nothing to cancel",
                                details={"job_id": job_id, "status": now.status})
        else:
            logger.info("job %s (%s) of %s asked to stop through the table", job_id, row["kind"], row["owner"])
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
        self._stop.set()
        if self._keeper is not None:
            self._keeper.join(max(timeout_s, 1.0))
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
                self._write_outcome(job, "interrupted", None, error_record("interrupted", INTERRUPTED_MESSAGE))
            self._store.close()
        if stuck:
            logger.warning("%d job(s) did not stop within %.1f s of shutdown; recorded as interrupted: %s",
                           len(stuck), timeout_s, ", ".join(j.job_id for j in stuck))
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- shared mode: orphans, heartbeat, cancels from elsewhere --------------------------------

    def interrupt_orphans(self) -> int:
        """Mark 'interrupted' the unfinished jobs whose owner is gone; returns how many.

        A job whose owner moved its heartbeat since it was read is left alone. Called when a
        shared manager starts and by its keeper thread.
        """
        with self._lock:
            if self._store.closed:
                return 0
            rows = self._store.unfinished_of_others(self.owner.owner)
            return sum(self._interrupt_if_orphaned(row) for row in rows)

    def _interrupt_if_orphaned(self, row: sqlite3.Row) -> bool:
        heartbeat = row["heartbeat_at"]
        if not owner_gone(self.owner, owner=row["owner"], host=row["owner_host"], pid=row["owner_pid"],
                          heartbeat_at=None if heartbeat is None else datetime.fromisoformat(heartbeat),
                          now=datetime.now(UTC), lease_s=self.lease_s):
            return False
        marked = self._store.interrupt(row["job_id"], error_record("interrupted", INTERRUPTED_MESSAGE,
                                                                   {"owner": row["owner"]}),
                                       heartbeat_at=heartbeat)
        if marked:
            logger.warning("job %s (%s) marked interrupted: its server process (%s) is gone", row["job_id"],
                           row["kind"], row["owner"])
        return marked

    def _keep(self) -> None:
        """The keeper thread (shared mode): cancels from elsewhere and orphans every poll, the heartbeat less often."""
        last_beat = time.monotonic()
        while not self._stop.wait(self.poll_s):
            try:
                self._take_cancels()
                self.interrupt_orphans()
                if time.monotonic() - last_beat >= self.heartbeat_s:
                    last_beat = time.monotonic()
                    self._beat()
            except (sqlite3.Error, MLServerError) as exc:  # a busy or closing database: try again next round
                logger.warning("job keeper: %s", exc)

    def _beat(self) -> None:
        with self._lock:
            if self._jobs and not self._store.closed:
                self._store.heartbeat(self.owner.owner)

    def _take_cancels(self) -> None:
        with self._lock:
            if not self._jobs or self._store.closed:
                return
            for job_id, status in self._store.cancels_requested(list(self._jobs)).items():
                job = self._jobs.get(job_id)
                if job is None or job.ctx.cancelled:
                    continue
                if job.status == "queued" and status == "cancelled":  # marked so by the other process
                    self._drop_cancelled(job)
                elif job.status == "queued":
                    self._cancel_queued(job)
                else:
                    job.ctx.request_cancel()
                logger.info("job %s (%s) cancelled through the table by another server process", job_id, job.kind)

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
            if not self._store.mark_running(job.job_id):  # cancelled through the table by another process
                self._drop_cancelled(job)
                return
            job.status = "running"
        logger.info("job %s (%s) started", job.job_id, job.kind)
        started = time.monotonic()
        outcome: _Outcome = ("failed", None, error_record("internal_error", "the job stopped without an outcome"))
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
            return "failed", None, error_record(exc.code, exc.message, with_location(exc.details))
        except (Exception, SystemExit) as exc:
            # The job boundary: a bug in one job fails that job, never the worker thread.
            logger.exception("job %s (%s) raised", job.job_id, job.kind)
            return "failed", None, error_record("internal_error", f"{type(exc).__name__}: {exc}")
        if not isinstance(out, dict):
            return "failed", None, error_record("internal_error",
                                                f"the job returned a {type(out).__name__}, not a dict")
        try:
            result = json.loads(dumps(out, what="the job's result"))
        except ValueError as exc:
            logger.error("job %s (%s): %s", job.job_id, job.kind, exc)
            return "failed", None, error_record("internal_error", str(exc))
        return ("cancelled" if job.ctx.cancelled else "succeeded"), result, None

    # -- recording (callers hold the lock) ----------------------------------------------------

    def _cancel_queued(self, job: _Job) -> None:
        self._request_cancel(job)
        self._write_outcome(job, "cancelled", None, None)

    def _drop_cancelled(self, job: _Job) -> None:
        """Forget a queued job that another process marked cancelled in its row (nothing more to write)."""
        job.ctx.request_cancel()
        job.status = "cancelled"
        self._jobs.pop(job.job_id, None)
        job.finished.set()

    def _request_cancel(self, job: _Job) -> None:
        job.ctx.request_cancel()
        self._store.mark_cancel_requested(job.job_id)

    def _write_outcome(self, job: _Job, status: str, result: dict[str, Any] | None,
                       error: dict[str, Any] | None) -> None:
        if job.finished.is_set():
            return  # already recorded (e.g. interrupted at shutdown)
        job.status = status
        if not self._store.closed:
            try:
                self._store.write_outcome(job.job_id, status, result, error, job.ctx.progress)
            except sqlite3.Error:
                logger.exception("could not record the outcome (%s) of job %s", status, job.job_id)
        self._jobs.pop(job.job_id, None)
        job.finished.set()

    def _persist_progress(self, ctx: JobContext) -> None:
        with self._lock:
            if self._store.closed:
                return
            try:
                self._store.write_progress(ctx.job_id, ctx.progress)
            except sqlite3.Error as exc:  # progress is advisory: never fail a job over it
                logger.warning("could not record progress of job %s: %s", ctx.job_id, exc)


def _live(job: _Job | None) -> JobProgress | None:
    """The in-memory progress of a job this process runs, else None (the row's is used)."""
    return None if job is None else job.ctx.progress
