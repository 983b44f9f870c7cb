"""The schedule store: cron-like crew schedules and every firing of them, in the runs store's SQLite file.

Two tables next to ``runs`` and ``tool_calls`` (same file, WAL, so ``quantcrew schedule add``
can write while ``quantcrew scheduler`` reads):

- ``schedules``: one row per schedule: ``schedule_id`` (short hex), ``cron`` (standard 5-field
  crontab) or ``every_seconds`` (exactly one of the two), ``kind`` (which crew), ``inputs``
  (kickoff inputs as JSON), ``created_at``, ``enabled``.
- ``schedule_runs``: one row per firing: ``scheduled_for`` (the fire time it serves),
  ``started_at``, ``finished_at``, ``status`` (``running``, ``succeeded``, ``failed`` or
  ``skipped``), ``run_id`` (the crew run in ``runs`` when one was created) and ``error``.
  Rows outlive the schedule they belong to, as history.

Cron day-of-week numbers follow crontab (0 or 7 = Sunday, 1-5 = Monday-Friday), not APScheduler
3's own numbering (0 = Monday): ``cron_trigger`` translates them.

Inspect it with the ``sqlite-utils`` CLI, e.g. ``sqlite-utils rows ~/.quantcrew/runs.db schedule_runs``.
"""

from __future__ import annotations

import builtins
import json
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from quantcrew.crew.runs import open_database

__all__ = [
    "RUN_STATUSES",
    "Schedule",
    "ScheduleError",
    "ScheduleNotFound",
    "ScheduleRun",
    "ScheduleStore",
    "cron_trigger",
    "make_trigger",
    "validate_trigger",
]

RUN_STATUSES = ("running", "succeeded", "failed", "skipped")
"""Every status a ``schedule_runs`` row can have."""

_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class ScheduleError(ValueError):
    """A schedule that cannot be stored: bad cron expression, bad interval, bad kind or inputs."""


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


def _weekday(token: str, expr: str) -> int:
    text = token.strip().lower()
    if text.isdigit() and 0 <= int(text) <= 7:
        return int(text)
    if text[:3] in _WEEKDAYS and len(text) == 3:
        return _WEEKDAYS.index(text)
    raise ScheduleError(f"invalid cron expression {expr!r}: day-of-week {token!r} is not 0-7 or sun..sat")


def _weekdays_for_apscheduler(dow: str, expr: str) -> str:
    """A crontab day-of-week field (0/7 = Sunday) as an APScheduler 3 field (0 = Monday)."""
    if dow in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in dow.split(","):
        body, slash, step_text = part.partition("/")
        if slash and not (step_text.isdigit() and int(step_text) >= 1):
            raise ScheduleError(f"invalid cron expression {expr!r}: day-of-week step {step_text!r} "
                                "is not a number >= 1")
        step = int(step_text) if slash else 1
        if body == "*":
            first, last = 0, 6
        elif "-" in body:
            low, _, high = body.partition("-")
            first, last = _weekday(low, expr), _weekday(high, expr)
        else:
            first = _weekday(body, expr)
            last = 6 if slash else first
        if first > last:
            raise ScheduleError(f"invalid cron expression {expr!r}: day-of-week range {body!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(str(index) for index in sorted((day - 1) % 7 for day in days))


def cron_trigger(expr: str) -> CronTrigger:
    """A trigger for a standard 5-field crontab expression (minute hour day month day-of-week).

    Day-of-week follows crontab (0 or 7 = Sunday, 1-5 = Monday-Friday). Times are the
    scheduler machine's local time.

    Raises:
        ScheduleError: the expression is malformed; the message names it and what is wrong.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(f"invalid cron expression {expr!r}: expected 5 fields (minute hour day month "
                            f"day-of-week), got {len(fields)}; e.g. '0 22 * * 1-5' for 22:00 Monday to Friday")
    minute, hour, day, month, dow = fields
    weekdays = _weekdays_for_apscheduler(dow, expr)
    try:
        trigger = CronTrigger(minute=minute, hour=hour, day=None if day == "?" else day, month=month,
                              day_of_week=weekdays)
    except ValueError as exc:
        raise ScheduleError(f"invalid cron expression {expr!r}: {exc}") from exc
    if day not in ("*", "?") and dow not in ("*", "?"):
        raise ScheduleError(f"invalid cron expression {expr!r}: restrict day-of-month or day-of-week, not both "
                            f"(crontab fires when either matches; this scheduler would need both)")
    if trigger.get_next_fire_time(None, datetime.now(trigger.timezone)) is None:
        raise ScheduleError(f"invalid cron expression {expr!r}: it never fires")
    return trigger


def make_trigger(cron: str | None, every_seconds: int | None, *, start: datetime | None = None) -> BaseTrigger:
    """The trigger for a cron expression or an interval, whichever is given.

    Args:
        cron: A 5-field crontab expression.
        every_seconds: An interval in seconds.
        start: When an interval starts counting (first fire ``start + every_seconds``); default now.

    Raises:
        ScheduleError: both or neither given, a bad expression, or an interval under 1 s.
    """
    validate_trigger(cron, every_seconds)
    if cron is not None:
        return cron_trigger(cron)
    assert every_seconds is not None
    return IntervalTrigger(seconds=every_seconds,
                           start_date=None if start is None else start + timedelta(seconds=every_seconds))


def validate_trigger(cron: str | None, every_seconds: int | None) -> None:
    """Check that exactly one of ``cron`` / ``every_seconds`` is given and that it is valid.

    Raises:
        ScheduleError: the message names the bad value.
    """
    if (cron is None) == (every_seconds is None):
        raise ScheduleError("give either a cron expression or every_seconds, not both and not neither")
    if cron is not None:
        cron_trigger(cron)
        return
    if isinstance(every_seconds, bool) or not isinstance(every_seconds, int) or every_seconds < 1:
        raise ScheduleError(f"every_seconds must be a whole number of seconds >= 1, got {every_seconds!r}")


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
        """Close a ``running`` firing as ``succeeded`` or ``failed``.

        Returns:
            False when the row was no longer running (e.g. already marked interrupted by a
            shutdown): the first outcome recorded wins.

        Raises:
            ValueError: ``status`` is not ``succeeded`` or ``failed``.
        """
        if status not in ("succeeded", "failed"):
            raise ValueError(f"status must be 'succeeded' or 'failed', got {status!r}")
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
