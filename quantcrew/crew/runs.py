"""The runs store: runs, tool calls and their results in one SQLite file (WAL).

Inspect it with the ``sqlite-utils`` CLI, e.g. ``sqlite-utils rows ~/.quantcrew/runs.db runs``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlite_utils

if TYPE_CHECKING:  # crewai (under quantcrew.tools.base) is seconds to import; the store does not need it
    from quantcrew.tools.base import ToolResult

__all__ = ["STATUSES", "RunsStore", "open_database"]


_RUN_COLUMNS: dict[str, type] = {"decision": str, "degraded": int, "llm_calls": int, "duration_s": float,
                                  "budget": str}
"""Columns of ``runs`` beyond the first schema: the decision (JSON), whether any input was degraded,
LLM calls made, wall time, and the budget the run was held to."""

STATUSES = ("running", "succeeded", "failed", "interrupted", "budget_exceeded")


def _now() -> str:
    return datetime.now(UTC).isoformat()


def open_database(path: Path) -> sqlite_utils.Database:
    """The runs-store SQLite file at ``path`` (created with its folder), in WAL mode, shareable across threads
    (each store guards its own use with a lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(sqlite3.connect(str(path), check_same_thread=False, timeout=30))
    db.enable_wal()
    return db


class RunsStore:
    """Append-only record of crew runs and every tool call made in them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = open_database(self.path)
        self._lock = threading.Lock()
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        names = set(self._db.table_names())
        if "runs" not in names:
            self._db["runs"].create(  # type: ignore[union-attr]
                {"run_id": str, "kind": str, "status": str, "started_at": str, "finished_at": str,
                 "inputs": str, "llm": str, "server_url": str, "output": str, "error": str},
                pk="run_id",
            )
        runs = self._db["runs"]
        for column, kind in _RUN_COLUMNS.items():  # columns added after the first release
            if column not in runs.columns_dict:
                runs.add_column(column, kind)  # type: ignore[union-attr]
        if "tool_calls" not in names:
            self._db["tool_calls"].create(  # type: ignore[union-attr]
                {"id": int, "run_id": str, "tool": str, "created_at": str, "arguments": str, "ok": int,
                 "degraded": int, "degraded_reason": str, "summary": str, "data": str, "elapsed_ms": float},
                pk="id", foreign_keys=[("run_id", "runs", "run_id")],
            )
            self._db["tool_calls"].create_index(["run_id"])  # type: ignore[union-attr]

    def close(self) -> None:
        self._db.conn.close()

    def start_run(self, *, kind: str, inputs: dict[str, Any], llm: str, server_url: str | None,
                  budget: str | None = None) -> str:
        """Record a new run as ``running`` and return its id."""
        run_id = uuid.uuid4().hex[:16]
        with self._lock, self._db.conn:
            self._db["runs"].insert({  # type: ignore[union-attr]
                "run_id": run_id, "kind": kind, "status": "running", "started_at": _now(), "finished_at": None,
                "inputs": json.dumps(inputs, default=str), "llm": llm, "server_url": server_url,
                "output": None, "error": None, "budget": budget,
            })
        return run_id

    def record_tool_call(self, run_id: str, result: ToolResult) -> None:
        """Store one tool call with its full structured result."""
        with self._lock, self._db.conn:
            self._db["tool_calls"].insert({  # type: ignore[union-attr]
                "run_id": run_id, "tool": result.tool, "created_at": _now(),
                "arguments": json.dumps(result.arguments, default=str), "ok": int(result.ok),
                "degraded": int(result.degraded), "degraded_reason": result.degraded_reason,
                "summary": result.summary, "data": json.dumps(result.data, default=str),
                "elapsed_ms": result.elapsed_ms,
            })

    def finish_run(self, run_id: str, *, status: str, output: str | None = None, error: str | None = None,
                   decision: dict[str, Any] | None = None, degraded: bool | None = None,
                   llm_calls: int | None = None, duration_s: float | None = None) -> None:
        """Close a run: ``succeeded``, ``failed``, ``interrupted`` or ``budget_exceeded``."""
        if status not in STATUSES or status == "running":
            raise ValueError(f"a finished run's status must be one of {list(STATUSES[1:])}, got {status!r}")
        with self._lock, self._db.conn:
            self._db["runs"].update(run_id, {  # type: ignore[union-attr]
                "status": status, "finished_at": _now(), "output": output, "error": error,
                "decision": json.dumps(decision, default=str) if decision is not None else None,
                "degraded": None if degraded is None else int(degraded), "llm_calls": llm_calls,
                "duration_s": duration_s,
            })

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run with its tool calls (JSON columns decoded), or None."""
        with self._lock:
            rows = list(self._db["runs"].rows_where("run_id = ?", [run_id]))
            if not rows:
                return None
            calls = list(self._db["tool_calls"].rows_where("run_id = ?", [run_id], order_by="id"))
        run = dict(rows[0])
        run["inputs"] = json.loads(run["inputs"] or "{}")
        run["decision"] = json.loads(run["decision"]) if run.get("decision") else None
        run["degraded"] = None if run.get("degraded") is None else bool(run["degraded"])
        for call in calls:
            call["arguments"] = json.loads(call["arguments"] or "{}")
            call["data"] = json.loads(call["data"] or "{}")
            call["ok"] = bool(call["ok"])
            call["degraded"] = bool(call["degraded"])
        run["tool_calls"] = calls
        return run

    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first (without their tool calls)."""
        with self._lock:
            return list(self._db["runs"].rows_where(order_by="started_at desc", limit=limit))
