"""Outcomes: what happened after each decision, posted by the crew (or any client), kept once per id.

Table ``outcomes`` in the registry's SQLite file (its own connection, WAL, ``BEGIN IMMEDIATE``
writes). ``outcome_id`` is the idempotency key: posting an outcome again with the same values is
accepted and counted as known; the same id with another value is a conflict naming the field, and
refuses the whole batch (nothing of it is written). Live quality joins predictions to outcomes
on ``(subject, as_of)``, ``as_of`` in the canonical form of
:func:`~quantcrew.ml_server.services.monitor.predictions.as_of_key`.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from quantcrew.ml_server.errors import ConflictError
from quantcrew.ml_server.schemas.monitor import Outcome, OutcomeInfo
from quantcrew.ml_server.services.monitor.predictions import as_of_key
from quantcrew.ml_server.transaction import immediate

__all__ = ["OutcomeStore", "StoredOutcome"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    outcome_id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    as_of TEXT NOT NULL,
    realised_return REAL NOT NULL,
    horizon_bars INTEGER NOT NULL,
    regime TEXT,
    position REAL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS outcomes_subject ON outcomes (subject, as_of);
CREATE INDEX IF NOT EXISTS outcomes_received ON outcomes (received_at);
"""
_FIELDS = ("subject", "as_of", "realised_return", "horizon_bars", "regime", "position")


@dataclass(frozen=True)
class StoredOutcome:
    """An outcome as stored (``as_of`` canonical)."""

    outcome_id: str
    subject: str
    as_of: str
    realised_return: float
    horizon_bars: int
    regime: str | None
    position: float | None
    received_at: str

    def values(self) -> tuple[object, ...]:
        return (self.subject, self.as_of, self.realised_return, self.horizon_bars, self.regime, self.position)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-15)
    return a == b


class OutcomeStore:
    """Outcomes keyed by id, looked up by (subject, as_of).

    Args:
        db_path: The SQLite file (the registry's).
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @staticmethod
    def _stored(o: Outcome, received_at: str) -> StoredOutcome:
        key = as_of_key(o.as_of)
        assert key is not None
        return StoredOutcome(outcome_id=o.outcome_id, subject=o.subject, as_of=key,
                             realised_return=float(o.realised_return), horizon_bars=int(o.horizon_bars),
                             regime=o.regime, position=None if o.position is None else float(o.position),
                             received_at=received_at)

    def add(self, outcomes: Sequence[Outcome]) -> tuple[int, int]:
        """Store the outcomes not stored yet; returns ``(inserted, known)``.

        Raises:
            ConflictError: an id already stored (or twice in the batch) with another value; its
                details name the id and the field, and nothing of the batch is written.
        """
        now = datetime.now(UTC).isoformat(timespec="microseconds")
        rows = [self._stored(o, now) for o in outcomes]
        inserted = known = 0
        with self._lock, immediate(self._conn) as conn:
            seen: dict[str, StoredOutcome] = {}
            for i, row in enumerate(rows):
                prior = seen.get(row.outcome_id) or self._get(row.outcome_id)
                if prior is not None:
                    self._check_same(prior, row, index=i)
                    known += 1
                    continue
                conn.execute("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             (row.outcome_id, *row.values(), row.received_at))
                seen[row.outcome_id] = row
                inserted += 1
        return inserted, known

    @staticmethod
    def _check_same(prior: StoredOutcome, row: StoredOutcome, *, index: int) -> None:
        for field, old, new in zip(_FIELDS, prior.values(), row.values(), strict=True):
            if not _same(old, new):
                raise ConflictError(
                    f"outcome '{row.outcome_id}' is already recorded with {field}={old!r}; this one has {new!r}",
                    details=[{"loc": ["body", "outcomes", index, field], "outcome_id": row.outcome_id,
                              "msg": f"differs from the recorded {field}"}])

    def _get(self, outcome_id: str) -> StoredOutcome | None:
        row = self._conn.execute("SELECT * FROM outcomes WHERE outcome_id = ?", (outcome_id,)).fetchone()
        return None if row is None else StoredOutcome(*row)

    def get(self, outcome_id: str) -> StoredOutcome | None:
        with self._lock:
            return self._get(outcome_id)

    def recent(self, limit: int = 100, subject: str | None = None) -> list[StoredOutcome]:
        """The newest outcomes (of one subject, or all), newest first."""
        limit = max(1, min(int(limit), 10_000))
        with self._lock:
            if subject is None:
                rows = self._conn.execute("SELECT * FROM outcomes ORDER BY received_at DESC, rowid DESC LIMIT ?",
                                          (limit,)).fetchall()
            else:
                rows = self._conn.execute(
                    "SELECT * FROM outcomes WHERE subject = ? ORDER BY received_at DESC, rowid DESC LIMIT ?",
                    (subject, limit)).fetchall()
        return [StoredOutcome(*r) for r in rows]


def outcome_info(o: StoredOutcome) -> OutcomeInfo:
    """The wire form of a stored outcome."""
    return OutcomeInfo(outcome_id=o.outcome_id, subject=o.subject, as_of=o.as_of,
                       realised_return=o.realised_return, horizon_bars=o.horizon_bars, regime=o.regime,
                       position=o.position, received_at=datetime.fromisoformat(o.received_at))
