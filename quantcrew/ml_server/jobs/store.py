"""The ``jobs`` table: one row per job, and the row <-> :class:`JobInfo` conversion.

Jobs are recorded in the registry's SQLite file through a connection of their own (WAL), so
finished jobs stay readable after a restart. Times are stored as ISO text in UTC; params,
metrics, result and error as JSON text.

Each row also names its owner (``owner``, ``owner_host``, ``owner_pid``, ``heartbeat_at``; see
:mod:`~quantcrew.ml_server.jobs.owner`), so that server processes sharing the file (replicas on a
shared home) can tell their own jobs from another's and a dead owner's. A table written before
these columns gets them when it is opened (rows without an owner read as the jobs of a server
that is gone).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantcrew.ml_server.errors import ModelNotReadyError
from quantcrew.ml_server.jobs.context import progress_fraction
from quantcrew.ml_server.jobs.jsonable import dumps, jsonable
from quantcrew.ml_server.jobs.owner import JobOwner
from quantcrew.ml_server.schemas.common import ErrorDetail
from quantcrew.ml_server.schemas.jobs import JobInfo, JobProgress

__all__ = ["JobStore", "error_record", "job_info"]

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
    error text,
    owner text,
    owner_host text,
    owner_pid integer,
    heartbeat_at text
)
"""
_OWNER_COLUMNS = (("owner", "text"), ("owner_host", "text"), ("owner_pid", "integer"), ("heartbeat_at", "text"))
"""Added by :meth:`JobStore._migrate` to a table written before owners were recorded."""
_UNFINISHED = "status in ('queued', 'running')"


class JobStore:
    """The ``jobs`` table of an SQLite file; the table is created if missing.

    Not locked by itself: the :class:`~quantcrew.ml_server.jobs.manager.JobManager` holds its
    own lock around every call, since a call often goes with a change to its in-memory jobs.

    Args:
        db_path: The SQLite file (the model registry's); its folder is created if missing.
    """

    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        # shared by the worker threads and the request threads, always under the manager's lock
        self._db = sqlite3.connect(str(db_path), check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("pragma journal_mode=wal")
        with self._db:
            self._db.execute(_SCHEMA)
            self._migrate()
            self._db.execute("create index if not exists jobs_created_at on jobs (created_at)")
            self._db.execute("create index if not exists jobs_status on jobs (status)")
        self._closed = False

    def _migrate(self) -> None:
        """Add the owner columns to a table written before them (another process may be doing the same)."""
        present = {row["name"] for row in self._db.execute("pragma table_info(jobs)")}
        for column, kind in _OWNER_COLUMNS:
            if column in present:
                continue
            try:
                self._db.execute(f"alter table jobs add column {column} {kind}")
            except sqlite3.OperationalError as exc:  # added by another process meanwhile
                if "duplicate column" not in str(exc):
                    raise

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called; reads then raise, writes must not be made."""
        return self._closed

    def interrupt_unfinished(self, error: dict[str, Any]) -> int:
        """Mark every 'queued' or 'running' row 'interrupted' with ``error``; return how many.

        Args:
            error: The stored error (see :func:`error_record`).

        Returns:
            The number of rows marked.
        """
        with self._db:
            return self._db.execute(
                f"update jobs set status = 'interrupted', finished_at = ?, error = ? where {_UNFINISHED}",
                (_now(), dumps(error)),
            ).rowcount

    def interrupt(self, job_id: str, error: dict[str, Any], *, heartbeat_at: str | None) -> bool:
        """Mark one unfinished job 'interrupted', unless its owner's heartbeat moved since it was read.

        Args:
            job_id: The job.
            error: The stored error (see :func:`error_record`).
            heartbeat_at: The heartbeat read when its owner was judged gone (the guard).

        Returns:
            Whether the row was marked.
        """
        with self._db:
            return self._db.execute(
                f"update jobs set status = 'interrupted', finished_at = ?, error = ? where job_id = ? "
                f"and {_UNFINISHED} and heartbeat_at is ?",
                (_now(), dumps(error), job_id, heartbeat_at),
            ).rowcount > 0

    def unfinished_of_others(self, owner: str) -> Sequence[sqlite3.Row]:
        """Queued or running rows that ``owner`` does not own (with their owner columns).

        Raises:
            ModelNotReadyError: the store is closed (503).
        """
        return self._select(f"where {_UNFINISHED} and (owner is null or owner != ?)", (owner,))

    def heartbeat(self, owner: str) -> int:
        """Move the heartbeat of ``owner``'s unfinished jobs to now; returns how many rows."""
        with self._db:
            return self._db.execute(f"update jobs set heartbeat_at = ? where owner = ? and {_UNFINISHED}",
                                    (_now(), owner)).rowcount

    def cancels_requested(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Of ``job_ids``, those whose cancelling was asked for (by any process), with their status now."""
        if not job_ids:
            return {}
        marks = ", ".join("?" for _ in job_ids)
        return {row["job_id"]: row["status"] for row in self._select(
            f"where cancel_requested = 1 and job_id in ({marks})", tuple(job_ids))}

    def insert(self, job_id: str, kind: str, created: datetime, params_json: str,
               owner: JobOwner | None = None) -> None:
        """Add a 'queued' row.

        Args:
            job_id: The new job's id.
            kind: What the job does.
            created: When it was submitted (UTC).
            params_json: Its params as JSON text.
            owner: The process that runs it (None: none recorded); its heartbeat starts now.
        """
        with self._db:
            self._db.execute(
                "insert into jobs (job_id, kind, status, created_at, params, owner, owner_host, owner_pid, "
                "heartbeat_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job_id, kind, "queued", _iso(created), params_json, None if owner is None else owner.owner,
                 None if owner is None else owner.host, None if owner is None else owner.pid,
                 None if owner is None else _now()))

    def mark_running(self, job_id: str) -> bool:
        """Set a 'queued' job 'running', started now; False when it is no longer queued (cancelled elsewhere)."""
        with self._db:
            return self._db.execute("update jobs set status = 'running', started_at = ? where job_id = ? "
                                    "and status = 'queued'", (_now(), job_id)).rowcount > 0

    def cancel_queued(self, job_id: str) -> bool:
        """Mark a job that is still 'queued' 'cancelled' now; returns whether it was queued."""
        with self._db:
            return self._db.execute("update jobs set status = 'cancelled', cancel_requested = 1, finished_at = ? "
                                    "where job_id = ? and status = 'queued'", (_now(), job_id)).rowcount > 0

    def mark_cancel_requested(self, job_id: str) -> bool:
        """Record that cancelling the job was asked for, unless it has finished; returns whether it was."""
        with self._db:
            return self._db.execute(f"update jobs set cancel_requested = 1 where job_id = ? and {_UNFINISHED}",
                                    (job_id,)).rowcount > 0

    def write_outcome(self, job_id: str, status: str, result: dict[str, Any] | None,
                      error: dict[str, Any] | None, progress: JobProgress) -> None:
        """Record how the job finished, with its last progress, in one transaction.

        Args:
            job_id: The job.
            status: Its finished status.
            result: What it returned (JSON-able), or None.
            error: Why it failed (see :func:`error_record`), or None.
            progress: Its last report.

        Raises:
            sqlite3.Error: the database refused the write.
        """
        with self._db:
            self._db.execute(
                "update jobs set status = ?, finished_at = ?, result = ?, error = ? where job_id = ?",
                (status, _now(), None if result is None else dumps(result),
                 None if error is None else dumps(error), job_id))
            self._update_progress(job_id, progress)

    def write_progress(self, job_id: str, progress: JobProgress) -> None:
        """Record the job's latest progress report.

        Raises:
            sqlite3.Error: the database refused the write.
        """
        with self._db:
            self._update_progress(job_id, progress)

    def row(self, job_id: str) -> sqlite3.Row | None:
        """The job's row, or None if there is none.

        Raises:
            ModelNotReadyError: the store is closed (503).
        """
        rows = self._select("where job_id = ?", (job_id,))
        return rows[0] if rows else None

    def rows(self, *, kind: str | None = None, status: str | None = None, limit: int = 100) -> Sequence[sqlite3.Row]:
        """Rows newest first, optionally of one kind and/or one status, at most ``limit``.

        Args:
            kind: Only jobs of this kind (None: any).
            status: Only jobs in this status (None: any).
            limit: Most rows returned.

        Raises:
            ModelNotReadyError: the store is closed (503).
        """
        clauses, args = [], []
        for column, value in (("kind", kind), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = ("where " + " and ".join(clauses)) if clauses else ""
        return self._select(f"{where} order by created_at desc, rowid desc limit ?", (*args, limit))

    def close(self) -> None:
        """Close the connection; later reads raise :class:`ModelNotReadyError`."""
        self._closed = True
        self._db.close()

    def _select(self, tail: str, args: tuple[Any, ...]) -> Sequence[sqlite3.Row]:
        if self._closed:
            raise ModelNotReadyError("the job manager is shut down")
        return self._db.execute(f"select * from jobs {tail}", args).fetchall()

    def _update_progress(self, job_id: str, p: JobProgress) -> None:
        self._db.execute(
            "update jobs set done = ?, total = ?, message = ?, metrics = ?, progress_at = ? where job_id = ?",
            (p.done, p.total, p.message, json.dumps(p.metrics), _iso(p.updated_at), job_id))


def error_record(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """A job's error as stored and served (the fields of :class:`ErrorDetail`).

    Args:
        code: Machine-readable code, e.g. 'internal_error'.
        message: What went wrong, for a person.
        details: Anything more; made JSON-able, with ``str()`` for what has no JSON form.

    Returns:
        ``{"code", "message", "details"}``.
    """
    return {"code": code, "message": message, "details": jsonable(details, strict=False)}


def job_info(row: sqlite3.Row, live: JobProgress | None = None) -> JobInfo:
    """The job a row records.

    Args:
        row: A row of the ``jobs`` table.
        live: The in-memory progress of a job this process runs: fresher than the row, whose
            progress writes are throttled. None for the row's own.

    Returns:
        The job's entry.
    """
    if live is not None:
        progress = live
    else:
        progress = JobProgress(done=row["done"], total=row["total"],
                               fraction=progress_fraction(row["done"], row["total"]),
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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="microseconds")


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
