"""The runs store: runs, tool calls, their results and the decisions' outcomes in one SQLite file (WAL).

Inspect it with the ``sqlite-utils`` CLI, e.g. ``sqlite-utils rows ~/.quantcrew/runs.db runs``.

Tables:

- ``runs``: one row per crew run (inputs, status, the decision as JSON, whether it was degraded
  or gated, the outcomes it settled);
- ``tool_calls``: every tool call of a run with its structured result;
- ``backtest_trials``: every backtest configuration run on a data span (the trials ledger the
  walk-forward's deflated Sharpe ratio counts: :mod:`quantcrew.backtest.trials`);
- ``decision_outcomes``: what each stored decision earned, once per (run, symbol): the realised
  return of the bar after the decision, the decision's and the chosen agent's return, and
  whether the bandit was rewarded for it (``pending``, ``rewarded``, ``no_decision``,
  ``failed``). The row is claimed once (``INSERT ... ON CONFLICT DO NOTHING``) and a reward is
  sent only by the process holding the row's claim, so two settlers never reward twice.
  ``monitor_status`` says whether the outcome reached the ML server's monitor (NULL: not yet,
  ``posted``, ``refused`` with ``monitor_error``): one the server could not take is posted by the
  next settle.

A file made by an earlier version opens and is migrated in place (columns and tables added,
nothing rewritten); ``PRAGMA user_version`` records the schema version.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import sqlite_utils

from quantcrew.quant.trials import Trial

if TYPE_CHECKING:  # crewai (under quantcrew.tools.base) is seconds to import; the store does not need it
    from quantcrew.tools.base import ToolResult

__all__ = ["DECIDED_STATUSES", "REWARD_STATUSES", "SCHEMA_VERSION", "STATUSES", "RunStatus", "RunsStore",
           "open_database"]

SCHEMA_VERSION = 4
"""1: runs and tool_calls (with the added run columns); 2: gated flags and decision_outcomes;
3: backtest_trials; 4: the monitor columns of decision_outcomes."""

_RUN_COLUMNS: dict[str, str] = {"decision": "TEXT", "degraded": "INTEGER", "llm_calls": "INTEGER",
                                "duration_s": "REAL", "budget": "TEXT", "gated": "INTEGER", "settled": "TEXT",
                                "notes": "TEXT"}
"""Columns of ``runs`` beyond the first schema: the decision (JSON), whether any input was degraded,
LLM calls made, wall time, the budget the run was held to, whether any input was gated, what the
run's settling of earlier decisions did (JSON), and why it was degraded beyond its tool calls (JSON list)."""

_TOOL_CALL_COLUMNS: dict[str, str] = {"gated": "INTEGER", "gated_reason": "TEXT"}
_OUTCOME_MONITOR_COLUMNS: dict[str, str] = {"monitor_status": "TEXT", "monitor_error": "TEXT"}
"""Whether an outcome reached the ML server's monitor (NULL: not yet; ``posted``; ``refused``) and why not."""

_CREATE_RUNS = """CREATE TABLE IF NOT EXISTS "runs" (
   "run_id" TEXT PRIMARY KEY, "kind" TEXT, "status" TEXT, "started_at" TEXT, "finished_at" TEXT,
   "inputs" TEXT, "llm" TEXT, "server_url" TEXT, "output" TEXT, "error" TEXT)"""

_CREATE_TOOL_CALLS = """CREATE TABLE IF NOT EXISTS "tool_calls" (
   "id" INTEGER PRIMARY KEY, "run_id" TEXT REFERENCES "runs"("run_id"), "tool" TEXT, "created_at" TEXT,
   "arguments" TEXT, "ok" INTEGER, "degraded" INTEGER, "degraded_reason" TEXT, "summary" TEXT, "data" TEXT,
   "elapsed_ms" REAL)"""

_CREATE_OUTCOMES = """CREATE TABLE IF NOT EXISTS "decision_outcomes" (
   "run_id" TEXT NOT NULL REFERENCES "runs"("run_id"),
   "symbol" TEXT NOT NULL,
   "decision_date" TEXT NOT NULL,
   "outcome_date" TEXT NOT NULL,
   "close" REAL NOT NULL,
   "outcome_close" REAL NOT NULL,
   "r" REAL NOT NULL,
   "target" REAL NOT NULL,
   "decision_return" REAL NOT NULL,
   "agent" TEXT,
   "agent_target" REAL,
   "agent_return" REAL,
   "decision_id" TEXT,
   "reward_status" TEXT NOT NULL
       CHECK ("reward_status" IN ('pending', 'rewarded', 'no_decision', 'failed')),
   "reward_error" TEXT,
   "settled_at" TEXT NOT NULL,
   "rewarded_at" TEXT,
   "claim" TEXT,
   "claimed_at" TEXT,
   UNIQUE ("run_id", "symbol"))"""

_CREATE_TRIALS = """CREATE TABLE IF NOT EXISTS "backtest_trials" (
   "span" TEXT NOT NULL,
   "name" TEXT NOT NULL,
   "config_hash" TEXT NOT NULL,
   "sharpe" REAL NOT NULL,
   "periods_per_year" INTEGER NOT NULL,
   "n_bars" INTEGER NOT NULL,
   "config" TEXT NOT NULL,
   "first_run_at" TEXT NOT NULL,
   "last_run_at" TEXT NOT NULL,
   "runs" INTEGER NOT NULL DEFAULT 1,
   PRIMARY KEY ("span", "name", "config_hash"))"""

_OUTCOME_COLUMNS = ("run_id", "symbol", "decision_date", "outcome_date", "close", "outcome_close", "r", "target",
                    "decision_return", "agent", "agent_target", "agent_return", "decision_id", "reward_status",
                    "reward_error", "settled_at")

RunStatus = Literal["running", "succeeded", "degraded", "failed", "auth_failed", "interrupted", "budget_exceeded"]
"""A run's status. ``succeeded``: every model the crew asked for answered (a gated model's rule
answering by design included); ``degraded``: the run finished, but a model could not answer and a
fallback rule did, or a tool could not answer at all, or the bandit's rewards could not be sent
(the reasons are in the run's notes); ``auth_failed``: the ML server refused the API key;
``failed``, ``interrupted``, ``budget_exceeded``: the run stopped without finishing."""
STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
DECIDED_STATUSES: tuple[RunStatus, ...] = ("succeeded", "degraded")
"""Statuses of runs that finished with a decision to settle against its outcome."""

REWARD_STATUSES = ("pending", "rewarded", "no_decision", "failed")
"""``pending``: the bandit has not taken the reward yet (no server, or it was down: the next settle
retries); ``rewarded``: it took it (or had it already); ``no_decision``: no bandit decision to
reward (a fallback's choice, or a decision the bandit does not know); ``failed``: refused for good."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def open_database(path: Path) -> sqlite_utils.Database:
    """The runs-store SQLite file at ``path`` (created with its folder), in WAL mode, shareable across threads
    (each store guards its own use with a lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite_utils.Database(sqlite3.connect(str(path), check_same_thread=False, timeout=30))
    for attempt in range(50):
        try:  # switching a file to WAL needs it to itself: another connection opening it may say "locked"
            db.enable_wal()
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            time.sleep(0.05 * (1 + attempt % 5))
    return db


class RunsStore:
    """Append-only record of crew runs and every tool call made in them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = open_database(self.path)
        self._lock = threading.Lock()
        self._ensure_schema()

    def _ensure_schema(self) -> None:
        """Create the tables, or migrate a file made by an earlier version in place (one write transaction,
        so two stores opening one old file at once migrate it once)."""
        conn = self._db.conn
        with self._lock:
            if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return  # up to date: no write lock taken on open
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                    conn.commit()  # another store migrated it while this one waited for the lock
                    return
                conn.execute(_CREATE_RUNS)
                conn.execute(_CREATE_TOOL_CALLS)
                conn.execute('CREATE INDEX IF NOT EXISTS "idx_tool_calls_run_id" ON "tool_calls" ("run_id")')
                for table, columns in (("runs", _RUN_COLUMNS), ("tool_calls", _TOOL_CALL_COLUMNS)):
                    have = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
                    for column, kind in columns.items():  # columns added after the first release
                        if column not in have:
                            conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{column}" {kind}')
                conn.execute(_CREATE_OUTCOMES)
                have = {row[1] for row in conn.execute('PRAGMA table_info("decision_outcomes")')}
                for column, kind in _OUTCOME_MONITOR_COLUMNS.items():
                    if column not in have:
                        conn.execute(f'ALTER TABLE "decision_outcomes" ADD COLUMN "{column}" {kind}')
                conn.execute('CREATE INDEX IF NOT EXISTS "idx_decision_outcomes_pending" '
                             'ON "decision_outcomes" ("reward_status", "outcome_date")')
                conn.execute(_CREATE_TRIALS)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.commit()
            except BaseException:
                conn.rollback()
                raise

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
                "gated": int(result.gated), "gated_reason": result.gated_reason, "summary": result.summary,
                "data": json.dumps(result.data, default=str),
                "elapsed_ms": result.elapsed_ms,
            })

    def finish_run(self, run_id: str, *, status: str, output: str | None = None, error: str | None = None,
                   decision: dict[str, Any] | None = None, degraded: bool | None = None,
                   llm_calls: int | None = None, duration_s: float | None = None, gated: bool | None = None,
                   settled: dict[str, Any] | None = None, notes: list[str] | None = None) -> None:
        """Close a run with one of :data:`STATUSES` other than ``running``."""
        if status not in STATUSES or status == "running":
            raise ValueError(f"a finished run's status must be one of {list(STATUSES[1:])}, got {status!r}")
        with self._lock, self._db.conn:
            self._db["runs"].update(run_id, {  # type: ignore[union-attr]
                "status": status, "finished_at": _now(), "output": output, "error": error,
                "decision": json.dumps(decision, default=str) if decision is not None else None,
                "degraded": None if degraded is None else int(degraded), "llm_calls": llm_calls,
                "duration_s": duration_s, "gated": None if gated is None else int(gated),
                "settled": json.dumps(settled, default=str) if settled is not None else None,
                "notes": json.dumps(notes) if notes else None,
            })

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run with its tool calls (JSON columns decoded), or None."""
        with self._lock:
            rows = list(self._db["runs"].rows_where("run_id = ?", [run_id]))
            if not rows:
                return None
            calls = list(self._db["tool_calls"].rows_where("run_id = ?", [run_id], order_by="id"))
            outcomes = self._outcome_rows("run_id = ?", [run_id], order_by="symbol")
        run = dict(rows[0])
        run["inputs"] = json.loads(run["inputs"] or "{}")
        run["decision"] = json.loads(run["decision"]) if run.get("decision") else None
        run["settled"] = json.loads(run["settled"]) if run.get("settled") else None
        run["notes"] = json.loads(run["notes"]) if run.get("notes") else []
        for flag in ("degraded", "gated"):
            run[flag] = None if run.get(flag) is None else bool(run[flag])
        for call in calls:
            call["arguments"] = json.loads(call["arguments"] or "{}")
            call["data"] = json.loads(call["data"] or "{}")
            call["ok"] = bool(call["ok"])
            call["degraded"] = bool(call["degraded"])
            call["gated"] = bool(call.get("gated"))
        run["tool_calls"] = calls
        run["outcomes"] = outcomes
        return run

    def list_runs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The latest runs, newest first (without their tool calls)."""
        with self._lock:
            return list(self._db["runs"].rows_where(order_by="started_at desc", limit=limit))

    # -- outcomes ----------------------------------------------------------------------------------

    def unsettled_decisions(self) -> list[dict[str, Any]]:
        """Succeeded or degraded runs whose decision has a symbol without an outcome row, oldest first: ``run_id``,
        ``inputs``, ``decision`` (decoded) and ``settled_symbols`` (those with a row already)."""
        query = """SELECT run_id, inputs, decision FROM runs
                   WHERE status IN ('succeeded', 'degraded') AND decision IS NOT NULL AND json_valid(decision)
                     AND (SELECT COUNT(*) FROM decision_outcomes o WHERE o.run_id = runs.run_id)
                         < COALESCE(json_array_length(decision, '$.decisions'), 0)
                   ORDER BY started_at, run_id"""
        with self._lock:
            rows = self._db.conn.execute(query).fetchall()
            done: dict[str, set[str]] = {}
            for run_id, symbol in self._db.conn.execute(
                    "SELECT run_id, symbol FROM decision_outcomes WHERE run_id IN "
                    f"({','.join('?' * len(rows))})", [r[0] for r in rows]).fetchall() if rows else []:
                done.setdefault(run_id, set()).add(symbol)
        return [{"run_id": run_id, "inputs": json.loads(inputs or "{}"), "decision": json.loads(decision),
                 "settled_symbols": sorted(done.get(run_id, set()))} for run_id, inputs, decision in rows]

    def add_outcome(self, outcome: dict[str, Any], *, claim: str | None = None) -> bool:
        """Store a decision's outcome unless one is stored for its (run, symbol); True when this call stored it.

        With ``claim``, the row is stored already claimed by that caller (its reward is the caller's to send).
        """
        values = [outcome.get(c) for c in _OUTCOME_COLUMNS] + [claim, _now() if claim is not None else None]
        if values[_OUTCOME_COLUMNS.index("settled_at")] is None:
            values[_OUTCOME_COLUMNS.index("settled_at")] = _now()
        if outcome.get("reward_status") not in REWARD_STATUSES:
            raise ValueError(f"reward_status must be one of {list(REWARD_STATUSES)}, "
                             f"got {outcome.get('reward_status')!r}")
        columns = ", ".join(f'"{c}"' for c in (*_OUTCOME_COLUMNS, "claim", "claimed_at"))
        with self._lock, self._db.conn:
            cursor = self._db.conn.execute(
                f'INSERT INTO "decision_outcomes" ({columns}) VALUES ({", ".join("?" * len(values))}) '
                'ON CONFLICT ("run_id", "symbol") DO NOTHING', values)
        return cursor.rowcount == 1

    def claim_rewards(self, token: str, *, as_of: str | None = None, stale_after_s: float = 300.0
                      ) -> list[dict[str, Any]]:
        """Claim the outcomes whose reward is pending (outcome bar on or before ``as_of``; None: any) for the
        caller ``token``, and return them. A row is claimed by one caller at a time: claims older than
        ``stale_after_s`` (a settler that died) are taken over."""
        now = datetime.now(UTC)
        stale = (now - timedelta(seconds=stale_after_s)).isoformat()
        bound = "9999-12-31" if as_of is None else as_of[:10]
        with self._lock:
            with self._db.conn:
                self._db.conn.execute(
                    'UPDATE "decision_outcomes" SET "claim" = ?, "claimed_at" = ? '
                    "WHERE reward_status = 'pending' AND decision_id IS NOT NULL AND outcome_date <= ? "
                    "AND (claim IS NULL OR claim = ? OR claimed_at < ?)", (token, now.isoformat(), bound, token, stale))
            return self._outcome_rows("claim = ? AND reward_status = 'pending'", [token],
                                      order_by="outcome_date, run_id, symbol")

    def finish_reward(self, run_id: str, symbol: str, token: str, *, status: str, error: str | None = None) -> bool:
        """Record how the reward of a claimed outcome went and release the claim; False when ``token`` does not
        hold the claim (nothing changed)."""
        if status not in REWARD_STATUSES:
            raise ValueError(f"reward status must be one of {list(REWARD_STATUSES)}, got {status!r}")
        with self._lock, self._db.conn:
            cursor = self._db.conn.execute(
                'UPDATE "decision_outcomes" SET reward_status = ?, reward_error = ?, rewarded_at = ?, claim = NULL, '
                "claimed_at = NULL WHERE run_id = ? AND symbol = ? AND claim = ?",
                (status, error, _now() if status != "pending" else None, run_id, symbol, token))
        return cursor.rowcount == 1

    def release_claims(self, token: str) -> int:
        """Release every claim ``token`` still holds (its rewards stay pending for the next settle)."""
        with self._lock, self._db.conn:
            cursor = self._db.conn.execute(
                'UPDATE "decision_outcomes" SET claim = NULL, claimed_at = NULL WHERE claim = ?', (token,))
        return cursor.rowcount

    def pending_rewards(self, as_of: str | None = None) -> int:
        """How many stored outcomes wait for their bandit reward (outcome bar on or before ``as_of``)."""
        bound = "9999-12-31" if as_of is None else as_of[:10]
        with self._lock:
            row = self._db.conn.execute(
                "SELECT COUNT(*) FROM decision_outcomes WHERE reward_status = 'pending' AND decision_id IS NOT NULL "
                "AND outcome_date <= ?", (bound,)).fetchone()
        return int(row[0])

    def unposted_outcomes(self, as_of: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored outcomes not yet taken by the ML server's monitor (outcome bar on or before ``as_of``),
        oldest first."""
        bound = "9999-12-31" if as_of is None else as_of[:10]
        with self._lock:
            return self._outcome_rows("monitor_status IS NULL AND outcome_date <= ?", [bound],
                                      order_by="outcome_date, run_id, symbol", limit=limit)

    def unposted_count(self, as_of: str | None = None) -> int:
        """How many stored outcomes wait to be posted to the monitor (outcome bar on or before ``as_of``)."""
        bound = "9999-12-31" if as_of is None else as_of[:10]
        with self._lock:
            row = self._db.conn.execute("SELECT COUNT(*) FROM decision_outcomes WHERE monitor_status IS NULL "
                                        "AND outcome_date <= ?", (bound,)).fetchone()
        return int(row[0])

    def mark_posted(self, keys: Sequence[tuple[str, str]], *, status: str = "posted",
                    error: str | None = None) -> int:
        """Record that the outcomes of these (run, symbol) reached the monitor (or were refused for good)."""
        if status not in ("posted", "refused"):
            raise ValueError(f"monitor status must be 'posted' or 'refused', got {status!r}")
        with self._lock, self._db.conn:
            cursor = self._db.conn.executemany(
                'UPDATE "decision_outcomes" SET monitor_status = ?, monitor_error = ? WHERE run_id = ? AND symbol = ?',
                [(status, error, run_id, symbol) for run_id, symbol in keys])
        return cursor.rowcount

    def outcomes(self, run_id: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Stored outcomes, newest decision first (of one run when ``run_id`` is given)."""
        where, args = ("run_id = ?", [run_id]) if run_id is not None else (None, [])
        with self._lock:
            return self._outcome_rows(where, args, order_by="decision_date desc, run_id, symbol", limit=limit)

    def _outcome_rows(self, where: str | None, args: list[Any], *, order_by: str,
                      limit: int | None = None) -> list[dict[str, Any]]:
        rows = self._db["decision_outcomes"].rows_where(where, args, order_by=order_by, limit=limit)
        return [{k: v for k, v in row.items() if k not in ("claim", "claimed_at")} for row in rows]

    # -- the trials ledger -----------------------------------------------------------------------

    def record_trials(self, span: str, trials: Sequence[Trial]) -> int:
        """Record backtest trials on ``span``; a trial already there (same name and configuration) is
        counted once, its result refreshed. Returns how many were new."""
        now = _now()
        new = 0
        with self._lock, self._db.conn:
            for t in trials:
                cursor = self._db.conn.execute(
                    'INSERT INTO "backtest_trials" (span, name, config_hash, sharpe, periods_per_year, n_bars, config, '
                    "first_run_at, last_run_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (span, name, config_hash) DO UPDATE SET sharpe = excluded.sharpe, "
                    "last_run_at = excluded.last_run_at, runs = runs + 1 RETURNING runs",
                    (span, t.name, t.config_hash, t.sharpe, t.periods_per_year, t.n_bars,
                     json.dumps(dict(t.config), sort_keys=True, default=str), now, now))
                new += int(cursor.fetchone()[0] == 1)
        return new

    def span_trials(self, span: str) -> list[Trial]:
        """Every distinct trial recorded on ``span``, oldest first."""
        with self._lock:
            rows = self._db.conn.execute(
                "SELECT name, config_hash, sharpe, periods_per_year, n_bars, config FROM backtest_trials "
                "WHERE span = ? ORDER BY first_run_at, name", (span,)).fetchall()
        return [Trial(name=r[0], config_hash=r[1], sharpe=float(r[2]), periods_per_year=int(r[3]), n_bars=int(r[4]),
                      config=json.loads(r[5])) for r in rows]

    def trial_spans(self) -> list[dict[str, Any]]:
        """Each span with trials: how many, the best and worst Sharpe, and when last run."""
        with self._lock:
            rows = self._db.conn.execute(
                "SELECT span, COUNT(*), MAX(sharpe), MIN(sharpe), MAX(last_run_at) FROM backtest_trials "
                "GROUP BY span ORDER BY MAX(last_run_at) DESC").fetchall()
        return [{"span": r[0], "n_trials": int(r[1]), "best_sharpe": float(r[2]), "worst_sharpe": float(r[3]),
                 "last_run_at": r[4]} for r in rows]
