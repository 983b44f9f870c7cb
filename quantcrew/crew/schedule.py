"""The schedule store: cron-like crew schedules and every firing of them, in the runs store's SQLite file.

Two tables next to ``runs`` and ``tool_calls`` (same file, WAL, so ``quantcrew schedule add``
can write while ``quantcrew scheduler`` reads):

- ``schedules``: one row per schedule: ``schedule_id`` (short hex), ``cron`` (standard 5-field
  crontab) or ``every_seconds`` (exactly one of the two), ``kind`` (which crew), ``inputs``
  (kickoff inputs as JSON), ``created_at``, ``enabled``.
- ``schedule_runs``: one row per firing: ``scheduled_for`` (the fire time it serves),
  ``started_at``, ``finished_at``, ``status`` (``running``, ``succeeded``, ``degraded`` (the
  run finished with a fallback answering, see ``quantcrew.crew.runs.RunStatus``), ``failed`` or
  ``skipped``), ``run_id`` (the crew run in ``runs`` when one was created) and ``error``.
  Rows outlive the schedule they belong to, as history.

Triggers (crontab expressions and intervals) are parsed by :mod:`quantcrew.crew.cron`.

Inspect it with the ``sqlite-utils`` CLI, e.g. ``sqlite-utils rows ~/.quantcrew/runs.db schedule_runs``.
"""

from __future__ import annotations

import builtins
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from quantcrew.crew.cron import ScheduleError, make_trigger, validate_trigger
from quantcrew.crew.runs import open_database

__all__ = ["RUN_STATUSES", "Schedule", "ScheduleError", "ScheduleNotFound", "ScheduleRun", "ScheduleStore"]

RUN_STATUSES = ("running", "succeeded", "degraded", "failed", "skipped")
"""Every status a ``schedule_runs`` row can have."""


class ScheduleNotFound(ScheduleError, LookupError):
    """No schedule with that id; the message lists the known ids."""


def _now() -> str:
    return _iso(datetime.now(UTC))


def _iso(moment: datetime) -> str:
    """UTC, always with microseconds: the stored strings sort as the times do."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Schedule:
    """One stored schedule; ``cron`` or ``every_seconds`` is set, never both."""

    schedule_id: str
    kind: str
    inputs: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    every_seconds: int | None = None
    created_at: str = ""
    enabled: bool = True

    @property
    def trigger_text(self) -> str:
        """``cron '0 22 * * 1-5'`` or ``every 2 s``."""
        return f"cron '{self.cron}'" if self.cron is not None else f"every {self.every_seconds} s"

    def trigger(self) -> BaseTrigger:
        """The APScheduler trigger that fires this schedule (an interval counts from ``created_at``)."""
        return make_trigger(self.cron, self.every_seconds,
                            start=datetime.fromisoformat(self.created_at) if self.created_at else None)


@dataclass(frozen=True)
class ScheduleRun:
    """One firing of a schedule: a run (``running``, ``succeeded``, ``failed``) or a ``skipped`` fire time."""

    id: int
    schedule_id: str
    scheduled_for: str
    started_at: str
    finished_at: str | None
    status: str
    run_id: str | None
    error: str | None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to finish (None while running)."""
        if self.finished_at is None:
            return None
        return (datetime.fromisoformat(self.finished_at) - datetime.fromisoformat(self.started_at)).total_seconds()

    @property
    def lag_s(self) -> float:
        """Seconds from the fire time to the start."""
        return (datetime.fromisoformat(self.started_at) - datetime.fromisoformat(self.scheduled_for)).total_seconds()


class ScheduleStore:
    """Schedules and their firings, in the runs store's SQLite file (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = open_database(self.path)
        self._lock = threading.Lock()
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        with self._lock, self._db.conn:  # if_not_exists: a CLI and a running scheduler may both get here first
            self._db.table("schedules").create(
                {"schedule_id": str, "cron": str, "every_seconds": int, "kind": str, "inputs": str,
                 "created_at": str, "enabled": int},
                pk="schedule_id", if_not_exists=True,
            )
            self._db.table("schedule_runs").create(
                {"id": int, "schedule_id": str, "scheduled_for": str, "started_at": str, "finished_at": str,
                 "status": str, "run_id": str, "error": str},
                pk="id", if_not_exists=True,
            )
            self._db.table("schedule_runs").create_index(["schedule_id", "started_at"], if_not_exists=True)

    def close(self) -> None:
        self._db.conn.close()

    def __enter__(self) -> ScheduleStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # schedules

    def add(self, cron: str | None = None, kind: str = "full", inputs: dict[str, Any] | None = None, *,
            every_seconds: int | None = None) -> Schedule:
        """Store a new enabled schedule and return it.

        Args:
            cron: A 5-field crontab expression, e.g. ``"0 22 * * 1-5"`` (22:00 local, Monday-Friday).
            kind: The crew to run (a kind ``quantcrew.crew.kickoff.run`` knows).
            inputs: Kickoff inputs, e.g. ``{"symbols": "SP500"}``; must be JSON-serialisable.
            every_seconds: Fire every N seconds instead of on a cron expression.

        Raises:
            ScheduleError: a bad expression or interval, both or neither trigger, an empty kind,
                or inputs that are not a JSON object.
        """
        validate_trigger(cron, every_seconds)
        if not isinstance(kind, str) or not kind.strip():
            raise ScheduleError(f"kind must be a crew name such as 'full' or 'regime', got {kind!r}")
        if not isinstance(inputs or {}, dict):
            raise ScheduleError(f"inputs must be a mapping of kickoff inputs, got {type(inputs).__name__}")
        try:
            encoded = json.dumps(inputs or {}, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ScheduleError(f"inputs must be JSON-serialisable: {exc}") from exc
        schedule = Schedule(schedule_id=uuid.uuid4().hex[:8], kind=kind.strip(), inputs=json.loads(encoded),
                            cron=None if cron is None else " ".join(cron.split()), every_seconds=every_seconds,
                            created_at=_now(), enabled=True)
        with self._lock, self._db.conn:
            self._db.table("schedules").insert({
                "schedule_id": schedule.schedule_id, "cron": schedule.cron, "every_seconds": every_seconds,
                "kind": schedule.kind, "inputs": encoded, "created_at": schedule.created_at, "enabled": 1,
            })
        return schedule

    def list(self, *, enabled_only: bool = False) -> builtins.list[Schedule]:
        """Every schedule, oldest first."""
        where = "enabled = 1" if enabled_only else None
        with self._lock:
            rows = builtins.list(self._db.table("schedules").rows_where(where, order_by="created_at, schedule_id"))
        return [self._schedule(row) for row in rows]

    def get(self, schedule_id: str) -> Schedule:
        """The schedule with that id.

        Raises:
            ScheduleNotFound: no such id; the message lists the known ids.
        """
        with self._lock:
            rows = builtins.list(self._db.table("schedules").rows_where("schedule_id = ?", [schedule_id]))
        if not rows:
            raise self._not_found(schedule_id)
        return self._schedule(rows[0])

    def remove(self, schedule_id: str) -> Schedule:
        """Delete a schedule (its past firings stay in ``schedule_runs``) and return it.

        Raises:
            ScheduleNotFound: no such id; the message lists the known ids.
        """
        schedule = self.get(schedule_id)
        with self._lock, self._db.conn:
            self._db.conn.execute("delete from schedules where schedule_id = ?", [schedule_id])
        return schedule

    def set_enabled(self, schedule_id: str, enabled: bool) -> Schedule:
        """Enable or disable a schedule (a running scheduler picks the change up at its next sync).

        Raises:
            ScheduleNotFound: no such id.
        """
        self.get(schedule_id)
        with self._lock, self._db.conn:
            self._db.conn.execute("update schedules set enabled = ? where schedule_id = ?",
                                  [int(enabled), schedule_id])
        return self.get(schedule_id)

    def _not_found(self, schedule_id: str) -> ScheduleNotFound:
        known = [s.schedule_id for s in self.list()]
        listing = ", ".join(known) if known else "none yet (add one with 'quantcrew schedule add')"
        return ScheduleNotFound(f"no schedule '{schedule_id}' in {self.path}; known schedule ids: {listing}")

    @staticmethod
    def _schedule(row: dict[str, Any]) -> Schedule:
        return Schedule(schedule_id=row["schedule_id"], kind=row["kind"], inputs=json.loads(row["inputs"] or "{}"),
                        cron=row["cron"], every_seconds=row["every_seconds"], created_at=row["created_at"],
                        enabled=bool(row["enabled"]))

    # firings

    def start_run(self, schedule_id: str, scheduled_for: datetime) -> int:
        """Record a firing as ``running`` (started now) and return its row id."""
        with self._lock, self._db.conn:
            cursor = self._db.conn.execute(
                "insert into schedule_runs (schedule_id, scheduled_for, started_at, status) values (?, ?, ?, ?)",
                [schedule_id, _iso(scheduled_for), _now(), "running"],
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def finish_run(self, row_id: int, *, status: str, run_id: str | None = None, error: str | None = None) -> bool:
        """Close a ``running`` firing as ``succeeded``, ``degraded`` or ``failed``.

        Returns:
            False when the row was no longer running (e.g. already marked interrupted by a
            shutdown): the first outcome recorded wins.

        Raises:
            ValueError: ``status`` is not ``succeeded``, ``degraded`` or ``failed``.
        """
        if status not in ("succeeded", "degraded", "failed"):
            raise ValueError(f"status must be 'succeeded', 'degraded' or 'failed', got {status!r}")
        with self._lock, self._db.conn:
            cursor = self._db.conn.execute(
                "update schedule_runs set status = ?, finished_at = ?, run_id = coalesce(?, run_id), error = ? "
                "where id = ? and status = 'running'",
                [status, _now(), run_id, error, row_id],
            )
        return cursor.rowcount == 1

    def record_skipped(self, schedule_id: str, scheduled_for: datetime, reason: str) -> int:
        """Record a fire time that did not run (the previous run still going, or missed) and return its row id."""
        now = _now()
        with self._lock, self._db.conn:
            cursor = self._db.conn.execute(
                "insert into schedule_runs (schedule_id, scheduled_for, started_at, finished_at, status, error) "
                "values (?, ?, ?, ?, 'skipped', ?)",
                [schedule_id, _iso(scheduled_for), now, now, reason],
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def last_fire_time(self, schedule_id: str) -> datetime | None:
        """The latest fire time recorded for a schedule (run or skipped), or None if it never fired."""
        with self._lock:
            row = self._db.conn.execute("select max(scheduled_for) from schedule_runs where schedule_id = ?",
                                        [schedule_id]).fetchone()
        return None if row is None or row[0] is None else datetime.fromisoformat(row[0])

    def get_run(self, row_id: int) -> ScheduleRun | None:
        """One firing by row id, or None."""
        with self._lock:
            rows = builtins.list(self._db.table("schedule_runs").rows_where("id = ?", [row_id]))
        return ScheduleRun(**rows[0]) if rows else None

    def list_runs(self, schedule_id: str | None = None, limit: int | None = 20) -> builtins.list[ScheduleRun]:
        """The latest firings, newest first, of one schedule or of all; ``limit=None`` for every one."""
        where, args = ("schedule_id = ?", [schedule_id]) if schedule_id is not None else (None, [])
        with self._lock:
            rows = builtins.list(self._db.table("schedule_runs").rows_where(
                where, args, order_by="started_at desc, id desc", limit=limit))
        return [ScheduleRun(**row) for row in rows]
