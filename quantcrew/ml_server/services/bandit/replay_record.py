"""A warm-start replay as the bandit store records it (a row of ``bandit_replays``)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

__all__ = ["ReplayRecord", "replay_row"]


@dataclass(frozen=True)
class ReplayRecord:
    """A warm-start replay as recorded (a row of ``bandit_replays``).

    Attributes:
        replay_key: sha256 of (bandit id, symbol, sorted policy ids, span start, span end).
        bandit_id: The bandit replayed into.
        symbol: The instrument replayed.
        model_ids: The policies replayed, sorted.
        span_start: First bar replayed (ISO).
        span_end: Last bar replayed (ISO).
        bars: Bars in the span.
        status: 'running', 'done' or 'stopped' (cancelled or failed part way; its rewards stand).
        job_id: The job that ran it.
        bars_done: Bars rewarded.
        note: Why it stopped.
        result: The replay's result, once done (JSON-able).
        created_at: When it was claimed (ISO).
        finished_at: When it finished or stopped (ISO).
    """

    replay_key: str
    bandit_id: str
    symbol: str
    model_ids: tuple[str, ...]
    span_start: str
    span_end: str
    bars: int
    status: str
    job_id: str | None
    bars_done: int
    note: str | None
    result: dict[str, Any] | None
    created_at: str
    finished_at: str | None


def replay_row(db: sqlite3.Connection, replay_key: str) -> ReplayRecord | None:
    """The row of ``bandit_replays`` under ``replay_key`` as a record, or None (``db`` yields rows by name)."""
    row = db.execute("SELECT * FROM bandit_replays WHERE replay_key = ?", (replay_key,)).fetchone()
    if row is None:
        return None
    return ReplayRecord(
        replay_key=row["replay_key"], bandit_id=row["bandit_id"], symbol=row["symbol"],
        model_ids=tuple(json.loads(row["model_ids"])), span_start=row["span_start"], span_end=row["span_end"],
        bars=int(row["bars"]), status=row["status"], job_id=row["job_id"], bars_done=int(row["bars_done"]),
        note=row["note"], result=json.loads(row["result"]) if row["result"] else None,
        created_at=row["created_at"], finished_at=row["finished_at"])
