"""The alerts' tables in the registry's SQLite file: ``alerts``, ``alert_events`` and ``client_events``.

One connection of its own (WAL, one lock); writes run in ``BEGIN IMMEDIATE`` transactions. An alert is one row
per fingerprint and firing episode; the engine (:mod:`.alerts`) keeps the open ones in memory and writes each
change through here. Times are ISO text in UTC.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quantcrew.ml_server.errors import ModelNotReadyError
from quantcrew.ml_server.schemas.alerts import AlertEvent, AlertInfo
from quantcrew.ml_server.services.monitor.sources import Labels

__all__ = ["AlertRow", "AlertStore"]

_SCHEMA = (
    """create table if not exists alerts (
        alert_id integer primary key autoincrement,
        fingerprint text not null, rule text not null, metric text not null, labels text not null,
        status text not null, severity text not null, initial_severity text not null,
        comparison text not null, threshold real not null, value real, samples integer not null default 0,
        count integer not null default 0, first_seen text not null, last_seen text not null, fired_at text not null,
        acknowledged_at text, acknowledged_by text, resolved_at text, resolved_by text,
        escalations integer not null default 0, escalated_at text, notified_at text, message text not null default ''
    )""",
    "create index if not exists alerts_fingerprint on alerts (fingerprint, alert_id)",
    "create index if not exists alerts_status on alerts (status, alert_id)",
    """create table if not exists alert_events (
        id integer primary key autoincrement, alert_id integer not null, at text not null, kind text not null,
        detail text not null default '{}'
    )""",
    "create index if not exists alert_events_alert on alert_events (alert_id, id)",
    """create table if not exists client_events (
        event_id text primary key, kind text not null, client text not null, server text not null,
        at text not null, received_at text not null, failures integer, detail text
    )""",
    "create index if not exists client_events_kind_at on client_events (kind, at)",
)

_COLUMNS = ("fingerprint", "rule", "metric", "labels", "status", "severity", "initial_severity", "comparison",
            "threshold", "value", "samples", "count", "first_seen", "last_seen", "fired_at", "acknowledged_at",
            "acknowledged_by", "resolved_at", "resolved_by", "escalations", "escalated_at", "notified_at", "message")


@dataclass
class AlertRow:
    """An alert as the engine holds it (mutable; written back with :meth:`AlertStore.save`)."""

    fingerprint: str
    rule: str
    metric: str
    labels: Labels
    status: str
    severity: str
    initial_severity: str
    comparison: str
    threshold: float
    value: float | None
    samples: int
    count: int
    first_seen: datetime
    last_seen: datetime
    fired_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    escalations: int = 0
    escalated_at: datetime | None = None
    notified_at: datetime | None = None
    message: str = ""
    alert_id: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def info(self, events: list[AlertEvent] | None = None) -> AlertInfo:
        """The wire form."""
        return AlertInfo(
            alert_id=self.alert_id, fingerprint=self.fingerprint, rule=self.rule, metric=self.metric,
            labels=dict(self.labels), status=self.status, severity=self.severity,  # type: ignore[arg-type]
            initial_severity=self.initial_severity,  # type: ignore[arg-type]
            comparison=self.comparison, threshold=self.threshold, value=self.value, samples=self.samples,
            count=self.count, first_seen=self.first_seen, last_seen=self.last_seen, fired_at=self.fired_at,
            acknowledged_at=self.acknowledged_at, acknowledged_by=self.acknowledged_by,
            resolved_at=self.resolved_at, resolved_by=self.resolved_by, escalations=self.escalations,
            message=self.message, events=events)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat()


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _row(r: sqlite3.Row) -> AlertRow:
    labels = tuple((str(k), str(v)) for k, v in json.loads(r["labels"]))
    first_seen, last_seen, fired_at = _time(r["first_seen"]), _time(r["last_seen"]), _time(r["fired_at"])
    assert first_seen is not None and last_seen is not None and fired_at is not None
    return AlertRow(
        fingerprint=r["fingerprint"], rule=r["rule"], metric=r["metric"], labels=labels, status=r["status"],
        severity=r["severity"], initial_severity=r["initial_severity"], comparison=r["comparison"],
        threshold=r["threshold"], value=r["value"], samples=r["samples"], count=r["count"], first_seen=first_seen,
        last_seen=last_seen, fired_at=fired_at, acknowledged_at=_time(r["acknowledged_at"]),
        acknowledged_by=r["acknowledged_by"], resolved_at=_time(r["resolved_at"]), resolved_by=r["resolved_by"],
        escalations=r["escalations"], escalated_at=_time(r["escalated_at"]), notified_at=_time(r["notified_at"]),
        message=r["message"], alert_id=r["alert_id"])


def _values(row: AlertRow) -> tuple[Any, ...]:
    return (row.fingerprint, row.rule, row.metric, json.dumps(list(row.labels)), row.status, row.severity,
            row.initial_severity, row.comparison, row.threshold, row.value, row.samples, row.count,
            _iso(row.first_seen), _iso(row.last_seen), _iso(row.fired_at), _iso(row.acknowledged_at),
            row.acknowledged_by, _iso(row.resolved_at), row.resolved_by, row.escalations, _iso(row.escalated_at),
            _iso(row.notified_at), row.message)


class AlertStore:
    """The alert tables of ``db_path`` (created if missing).

    Args:
        db_path: The SQLite file (the registry's); its folder is created if missing.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=normal")
        self._lock = threading.RLock()
        self._depth = 0
        self._closed = False
        with self.transaction():
            for statement in _SCHEMA:
                self._db.execute(statement)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One ``BEGIN IMMEDIATE`` transaction around the block (nested blocks join the outer one)."""
        with self._lock:
            if self._closed:
                raise ModelNotReadyError("the alert store is closed")
            self._depth += 1
            if self._depth == 1:
                self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._db.execute("COMMIT")

    # -- alerts ----------------------------------------------------------------------------------------------

    def save(self, row: AlertRow) -> AlertRow:
        """Insert (``alert_id`` 0, which is then set) or update ``row``."""
        with self.transaction():
            if row.alert_id == 0:
                marks = ", ".join("?" for _ in _COLUMNS)
                cursor = self._db.execute(f"insert into alerts ({', '.join(_COLUMNS)}) values ({marks})",
                                          _values(row))
                row.alert_id = int(cursor.lastrowid or 0)
            else:
                sets = ", ".join(f"{c} = ?" for c in _COLUMNS)
                self._db.execute(f"update alerts set {sets} where alert_id = ?", (*_values(row), row.alert_id))
        return row

    def touch(self, row: AlertRow) -> None:
        """Write only what a repeated firing evaluation changes (count, last seen, value)."""
        with self.transaction():
            self._db.execute("update alerts set count = ?, last_seen = ?, value = ?, samples = ? where alert_id = ?",
                             (row.count, _iso(row.last_seen), row.value, row.samples, row.alert_id))

    def event(self, alert_id: int, at: datetime, kind: str, detail: dict[str, Any] | None = None) -> None:
        with self.transaction():
            self._db.execute("insert into alert_events (alert_id, at, kind, detail) values (?, ?, ?, ?)",
                             (alert_id, _iso(at), kind, json.dumps(detail or {}, default=str)))

    def get(self, alert_id: int) -> AlertRow | None:
        rows = self._select("where alert_id = ?", (alert_id,))
        return rows[0] if rows else None

    def open_alerts(self) -> builtins.list[AlertRow]:
        """Alerts firing or acknowledged, oldest first."""
        return self._select("where status in ('firing', 'acknowledged') order by alert_id", ())

    def last_resolved(self, fingerprint: str) -> AlertRow | None:
        rows = self._select("where fingerprint = ? and status = 'resolved' order by alert_id desc limit 1",
                            (fingerprint,))
        return rows[0] if rows else None

    def list(self, *, status: str | None = None, severity: str | None = None, rule: str | None = None,
             limit: int = 100) -> builtins.list[AlertRow]:
        """Alerts newest first, filtered."""
        clauses, args = [], []
        for column, value in (("status", status), ("severity", severity), ("rule", rule)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = ("where " + " and ".join(clauses)) if clauses else ""
        return self._select(f"{where} order by alert_id desc limit ?", (*args, limit))

    def events(self, alert_id: int, limit: int = 200) -> builtins.list[AlertEvent]:
        """An alert's history, oldest first (its last ``limit`` steps)."""
        with self._lock:
            self._check()
            rows = self._db.execute("select * from (select * from alert_events where alert_id = ? order by id desc "
                                    "limit ?) order by id", (alert_id, limit)).fetchall()
        return [AlertEvent(at=datetime.fromisoformat(r["at"]), kind=r["kind"], detail=json.loads(r["detail"]))
                for r in rows]

    # -- client events ---------------------------------------------------------------------------------------

    def record_client_event(self, *, kind: str, client: str, server: str, at: datetime, event_id: str | None,
                            failures: int | None, detail: str | None) -> tuple[str, bool]:
        """Store a client's event once; returns its id and whether it had been stored already."""
        event_id = event_id or uuid.uuid4().hex
        with self.transaction():
            cursor = self._db.execute(
                "insert or ignore into client_events (event_id, kind, client, server, at, received_at, failures, "
                "detail) values (?, ?, ?, ?, ?, ?, ?, ?)",
                (event_id, kind, client, server, _iso(at), _iso(datetime.now(UTC)), failures, detail))
        return event_id, cursor.rowcount == 0

    def count_events(self, kind: str, since: datetime) -> builtins.list[tuple[Labels, int]]:
        """Events of ``kind`` at or after ``since``, counted per (client, server)."""
        with self._lock:
            self._check()
            rows = self._db.execute("select client, server, count(*) as n from client_events where kind = ? and "
                                    "at >= ? group by client, server order by client, server",
                                    (kind, _iso(since))).fetchall()
        return [((("client", r["client"]), ("server", r["server"])), int(r["n"])) for r in rows]

    def _check(self) -> None:
        if self._closed:
            raise ModelNotReadyError("the alert store is closed")

    def _select(self, tail: str, args: tuple[Any, ...]) -> builtins.list[AlertRow]:
        with self._lock:
            self._check()
            return [_row(r) for r in self._db.execute(f"select * from alerts {tail}", args).fetchall()]
