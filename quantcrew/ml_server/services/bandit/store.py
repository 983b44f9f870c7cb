"""Bandits per regime, persisted in SQLite beside the model registry.

Four tables in the registry's database file (its own connection, WAL):

* ``bandits``: one row per bandit (name unique, policy, arms, regimes, params, seed);
* ``bandit_state``: one row per (bandit, regime) that has been used: the policy state and the
  random generator's state as JSON, counters, and a ``version`` bumped by every write;
* ``bandit_decisions``: every choice (arm, EXP3 propensity) and, once reported, its reward;
* ``bandit_replays``: every warm-start replay by its key (bandit, symbol, policies, span), so a
  span is never replayed, and rewarded, twice. A database written by a version without this
  table gets it when it is opened (every table is created if missing).

A policy instance per (bandit, regime) is created lazily and kept in memory. Every
:meth:`BanditStore.select` and :meth:`BanditStore.learn` runs in one ``BEGIN IMMEDIATE``
transaction that checks the row's version against the cached one (reloading when another
process wrote), applies the step, and writes the new state and the decision row together; a
failure drops the cached instance so that the next call reloads what was committed. Because the
generator's state is saved with the policy, a restarted server continues exactly the random
stream it would have drawn.

What a caller reads of a policy (:class:`RegimeView`) is taken under the store's lock, so a
reply never mixes two steps. Replies themselves are built by the family's service.

A state is never saved with an inf or NaN in it, and one that was (by an older version) or that
cannot be read back is refused with a :class:`~quantcrew.ml_server.errors.ConflictError` naming the
bandit and regime: :meth:`BanditStore.reset` (or :meth:`BanditStore.delete`) is the way out.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from quantcrew.ml_server.errors import ConflictError, NotFoundError
from quantcrew.ml_server.services.bandit.exploit import exploit_arm
from quantcrew.ml_server.services.bandit.params import ParamError
from quantcrew.ml_server.services.bandit.policies import make_policy, restore_policy
from quantcrew.ml_server.services.bandit.policy import ArmStats, BanditPolicy
from quantcrew.ml_server.services.bandit.replay_record import ReplayRecord, replay_row
from quantcrew.ml_server.transaction import immediate

__all__ = ["BanditRecord", "BanditStore", "Choice", "Learned", "RegimeSnapshot", "RegimeView"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bandits (
    bandit_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, policy TEXT NOT NULL, arms TEXT NOT NULL,
    regimes TEXT NOT NULL, params TEXT NOT NULL, seed INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS bandit_state (
    bandit_id TEXT NOT NULL REFERENCES bandits(bandit_id), regime TEXT NOT NULL, state TEXT NOT NULL,
    rng_state TEXT NOT NULL, pulls INTEGER NOT NULL, decisions INTEGER NOT NULL, version INTEGER NOT NULL,
    updated_at TEXT NOT NULL, last_reward_at TEXT, PRIMARY KEY (bandit_id, regime));
CREATE TABLE IF NOT EXISTS bandit_decisions (
    decision_id TEXT PRIMARY KEY, bandit_id TEXT NOT NULL REFERENCES bandits(bandit_id), regime TEXT NOT NULL,
    arm INTEGER NOT NULL, propensity REAL, created_at TEXT NOT NULL, reward REAL, rewarded_at TEXT);
CREATE INDEX IF NOT EXISTS bandit_decisions_pending ON bandit_decisions (bandit_id, regime, reward);
CREATE TABLE IF NOT EXISTS bandit_replays (
    replay_key TEXT PRIMARY KEY, bandit_id TEXT NOT NULL REFERENCES bandits(bandit_id), symbol TEXT NOT NULL,
    model_ids TEXT NOT NULL, span_start TEXT NOT NULL, span_end TEXT NOT NULL, bars INTEGER NOT NULL,
    status TEXT NOT NULL, job_id TEXT, bars_done INTEGER NOT NULL, note TEXT, result TEXT, created_at TEXT NOT NULL,
    finished_at TEXT);
"""


@dataclass(frozen=True)
class BanditRecord:
    """A bandit's fixed definition (a row of ``bandits``)."""

    bandit_id: str
    name: str
    policy: str
    arms: tuple[str, ...]
    regimes: tuple[str, ...]
    params: dict[str, Any]
    seed: int
    created_at: datetime


@dataclass(frozen=True)
class RegimeView:
    """A regime's policy as read under the store's lock.

    Attributes:
        stats: Every arm's estimate, uncertainty, pulls and score.
        pulls: Rewards received.
        pseudo_regret: Estimated regret from the empirical means.
        clipped: Rewards clipped to the reward range so far.
        decisions: Choices made.
        last_reward_at: When the last reward arrived (ISO), or None.
    """

    stats: list[ArmStats]
    pulls: int
    pseudo_regret: float
    clipped: int
    decisions: int
    last_reward_at: str | None


@dataclass(frozen=True)
class Choice:
    """A decision saved by :meth:`BanditStore.select`.

    Attributes:
        decision_id: Its id.
        arm: The arm chosen (0-based).
        propensity: The probability it was chosen with (EXP3 only).
        digest: Hash of the regime's state the choice was made from.
        view: The regime after the choice.
    """

    decision_id: str
    arm: int
    propensity: float | None
    digest: str
    view: RegimeView


@dataclass(frozen=True)
class Learned:
    """A reward learned by :meth:`BanditStore.learn`.

    Attributes:
        record: The decision's bandit.
        regime: The decision's regime.
        arm: The arm the decision chose.
        clipped: The reward lay outside the reward range and was clipped.
        digest: Hash of the regime's state before the reward.
        rewarded_at: When (ISO).
        view: The regime after the reward.
    """

    record: BanditRecord
    regime: str
    arm: int
    clipped: bool
    digest: str
    rewarded_at: str
    view: RegimeView


@dataclass(frozen=True)
class RegimeSnapshot:
    """One regime of a bandit as it stands (nothing created or written to read it)."""

    regime: str
    view: RegimeView
    digest: str
    pending: int
    updated_at: str | None


@dataclass
class _Live:
    """A regime's policy and generator in memory, with the version and hash of their saved state."""

    policy: BanditPolicy
    rng: np.random.Generator
    version: int
    digest: str
    decisions: int
    last_reward_at: str | None

    def view(self) -> RegimeView:
        p = self.policy
        return RegimeView(stats=p.explain(), pulls=p.total_pulls, pseudo_regret=p.pseudo_regret(), clipped=p.clipped,
                          decisions=self.decisions, last_reward_at=self.last_reward_at)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _digest(state: str, rng_state: str) -> str:
    return "sha256:" + hashlib.sha256(f"{state}\n{rng_state}".encode()).hexdigest()


class BanditStore:
    """Saves bandits, their decisions and rewards; state survives a restart.

    Args:
        db_path: SQLite file (the registry's) holding the bandit tables.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.RLock()
        self._records: dict[str, BanditRecord] = {}
        self._live: dict[tuple[str, str], _Live] = {}

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._live.clear()
            self._conn.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._conn)

    # -- bandits -----------------------------------------------------------------------------

    def create(self, record: BanditRecord) -> None:
        """Save a new bandit (its definition already checked).

        Raises:
            ConflictError: The name is taken.
        """
        with self._lock:
            try:
                with self._transaction() as db:
                    db.execute("INSERT INTO bandits VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (record.bandit_id, record.name, record.policy, json.dumps(record.arms),
                                json.dumps(record.regimes), json.dumps(record.params), record.seed,
                                record.created_at.isoformat()))
            except sqlite3.IntegrityError as exc:
                raise ConflictError(f"a bandit named '{record.name}' exists already; choose another name",
                                    details=[{"loc": ["name"], "msg": "name taken"}]) from exc
            self._records[record.bandit_id] = record

    def find(self, ref: str) -> BanditRecord | None:
        """The bandit with id or name ``ref``, or None."""
        with self._lock:
            record = self._records.get(ref)
            if record is not None:
                return record
            row = self._conn.execute("SELECT * FROM bandits WHERE bandit_id = ?", (ref,)).fetchone() or \
                self._conn.execute("SELECT * FROM bandits WHERE name = ?", (ref,)).fetchone()
            if row is None:
                return None
            record = BanditRecord(bandit_id=row["bandit_id"], name=row["name"], policy=row["policy"],
                                  arms=tuple(json.loads(row["arms"])), regimes=tuple(json.loads(row["regimes"])),
                                  params=json.loads(row["params"]), seed=int(row["seed"]),
                                  created_at=datetime.fromisoformat(row["created_at"]))
            self._records[record.bandit_id] = record
            return record

    def usage(self) -> list[tuple[BanditRecord, int, int]]:
        """Every bandit, oldest first, with its decisions and pulls summed over regimes."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT b.bandit_id, COALESCE(SUM(s.decisions), 0) AS d, COALESCE(SUM(s.pulls), 0) AS p "
                "FROM bandits b LEFT JOIN bandit_state s ON s.bandit_id = b.bandit_id "
                "GROUP BY b.bandit_id ORDER BY b.created_at, b.rowid").fetchall()
            out = []
            for r in rows:
                record = self.find(r["bandit_id"])
                assert record is not None  # listed under the lock: it exists
                out.append((record, int(r["d"]), int(r["p"])))
            return out

    def snapshot(self, record: BanditRecord) -> list[RegimeSnapshot]:
        """Every regime of ``record`` as it stands, with its decisions still waiting for a reward."""
        with self._lock:
            pending = dict(self._conn.execute(
                "SELECT regime, COUNT(*) FROM bandit_decisions WHERE bandit_id = ? AND reward IS NULL "
                "GROUP BY regime", (record.bandit_id,)).fetchall())
            out = []
            for regime in record.regimes:
                live, updated_at = self._peek(record, regime)
                out.append(RegimeSnapshot(regime=regime, view=live.view(), digest=live.digest,
                                          pending=int(pending.get(regime, 0)), updated_at=updated_at))
            return out

    # -- decisions ---------------------------------------------------------------------------

    def select(self, record: BanditRecord, regime: str, *, explore: bool = True) -> Choice:
        """Choose an arm for ``regime`` (one of the record's); the decision and the new state are saved together.

        Args:
            record: The bandit.
            regime: One of its regimes.
            explore: True: the policy draws (its scores and random stream move on). False: the
                arm with the highest mean reward (:func:`~quantcrew.ml_server.services.bandit.exploit.exploit_arm`),
                no draw; only the decision is recorded, the policy's state and stream stay as they were.
        """
        with self._lock:
            key = (record.bandit_id, regime)
            try:
                with self._transaction() as db:
                    live = self._load(db, record, regime)
                    digest = live.digest
                    if explore:
                        arm = live.policy.select(live.rng)
                        propensity = live.policy.propensity(arm)
                    else:
                        arm = exploit_arm(live.policy.explain())
                        propensity = live.policy.choice_probability(arm)
                    decision_id = "dec-" + uuid.uuid4().hex[:16]
                    now = _now()
                    db.execute("INSERT INTO bandit_decisions VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                               (decision_id, record.bandit_id, regime, arm, propensity, now))
                    live.decisions += 1
                    self._save(db, record, regime, live, now)
            except BaseException:
                self._live.pop(key, None)
                raise
            return Choice(decision_id=decision_id, arm=arm, propensity=propensity, digest=digest, view=live.view())

    def learn(self, decision_id: str, reward: float) -> Learned:
        """Learn from what decision ``decision_id`` earned (a finite reward).

        Raises:
            NotFoundError: No such decision.
            ConflictError: The decision was rewarded already.
        """
        with self._lock:
            row = self._conn.execute("SELECT * FROM bandit_decisions WHERE decision_id = ?",
                                     (decision_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no decision with id '{decision_id}'; use a decision_id returned by select",
                                    details=[{"loc": ["decision_id"], "msg": "unknown decision"}])
            record = self.find(row["bandit_id"])
            if record is None:  # deleted by another process since the row was read
                raise NotFoundError(f"no decision with id '{decision_id}'; its bandit was deleted",
                                    details=[{"loc": ["decision_id"], "msg": "unknown decision"}])
            regime, arm = row["regime"], int(row["arm"])
            key = (record.bandit_id, regime)
            try:
                with self._transaction() as db:
                    now = _now()
                    done = db.execute("UPDATE bandit_decisions SET reward = ?, rewarded_at = ? "
                                      "WHERE decision_id = ? AND reward IS NULL", (reward, now, decision_id))
                    if done.rowcount == 0:
                        raise _already_rewarded(db, decision_id)
                    live = self._load(db, record, regime)
                    digest = live.digest
                    clipped = live.policy.would_clip(reward)
                    live.policy.update(arm, reward, live.rng, propensity=row["propensity"])
                    live.last_reward_at = now
                    self._save(db, record, regime, live, now)
            except BaseException:
                self._live.pop(key, None)  # the next call reloads what was committed
                raise
            return Learned(record=record, regime=regime, arm=arm, clipped=clipped, digest=digest, rewarded_at=now,
                           view=live.view())

    # -- warm-start replays -------------------------------------------------------------------

    def claim_replay(self, record: BanditRecord, replay_key: str, *, symbol: str, model_ids: tuple[str, ...],
                     span_start: str, span_end: str, bars: int) -> ReplayRecord | None:
        """Record a replay as running, unless its key is recorded already.

        Returns:
            None when claimed now; the replay recorded earlier under the same key otherwise
            (nothing is written then).

        Raises:
            NotFoundError: The bandit was deleted meanwhile.
        """
        with self._lock, self._transaction() as db:
            earlier = replay_row(db, replay_key)
            if earlier is not None:
                return earlier
            if db.execute("SELECT 1 FROM bandits WHERE bandit_id = ?", (record.bandit_id,)).fetchone() is None:
                raise _deleted(record)
            db.execute("INSERT INTO bandit_replays VALUES (?, ?, ?, ?, ?, ?, ?, 'running', NULL, 0, NULL, NULL, ?, "
                       "NULL)", (replay_key, record.bandit_id, symbol, json.dumps(sorted(model_ids)), span_start,
                                 span_end, int(bars), _now()))
            return None

    def attach_replay_job(self, replay_key: str, job_id: str) -> None:
        """Name the job that runs a claimed replay."""
        with self._lock:
            self._conn.execute("UPDATE bandit_replays SET job_id = ? WHERE replay_key = ?", (job_id, replay_key))

    def progress_replay(self, replay_key: str, bars_done: int) -> None:
        """Record how many bars of a running replay were rewarded so far."""
        with self._lock:
            self._conn.execute("UPDATE bandit_replays SET bars_done = ? WHERE replay_key = ? AND status = 'running'",
                               (int(bars_done), replay_key))

    def finish_replay(self, replay_key: str, bars_done: int, result: dict[str, Any]) -> None:
        """Record a replay as done, with its result (JSON-able, finite)."""
        with self._lock:
            self._conn.execute("UPDATE bandit_replays SET status = 'done', bars_done = ?, result = ?, finished_at = ? "
                               "WHERE replay_key = ?",
                               (int(bars_done), json.dumps(result, allow_nan=False), _now(), replay_key))

    def stop_replay(self, replay_key: str, bars_done: int, note: str) -> None:
        """Record a replay that stopped part way; with no bar rewarded its key is released instead.

        The rewards of the bars done stand, so the key stays taken: the same span is never
        rewarded twice. With nothing rewarded, the replay may simply run again.
        """
        with self._lock:
            if bars_done <= 0:
                self._conn.execute("DELETE FROM bandit_replays WHERE replay_key = ? AND status = 'running'",
                                   (replay_key,))
                return
            self._conn.execute("UPDATE bandit_replays SET status = 'stopped', bars_done = ?, note = ?, "
                               "finished_at = ? WHERE replay_key = ?", (int(bars_done), note, _now(), replay_key))

    def replay(self, replay_key: str) -> ReplayRecord | None:
        """The replay recorded under ``replay_key``, or None."""
        with self._lock:
            return replay_row(self._conn, replay_key)

    # -- removal -----------------------------------------------------------------------------

    def delete(self, record: BanditRecord) -> tuple[list[str], int]:
        """Delete a bandit with its regimes' states and every decision.

        Returns:
            The regimes that had a saved state, and the number of decisions deleted.
        """
        with self._lock:
            key = (record.bandit_id,)
            try:
                with self._transaction() as db:
                    regimes = [r["regime"] for r in db.execute(
                        "SELECT regime FROM bandit_state WHERE bandit_id = ? ORDER BY regime", key).fetchall()]
                    decisions = db.execute("DELETE FROM bandit_decisions WHERE bandit_id = ?", key).rowcount
                    db.execute("DELETE FROM bandit_state WHERE bandit_id = ?", key)
                    db.execute("DELETE FROM bandit_replays WHERE bandit_id = ?", key)
                    db.execute("DELETE FROM bandits WHERE bandit_id = ?", key)
            finally:
                self._forget(record)
            return regimes, decisions

    def reset(self, record: BanditRecord, regimes: tuple[str, ...]) -> None:
        """Forget what ``regimes`` (some of the record's) learned; the bandit's definition stays.

        Each regime starts again from its prior and its seeded generator, and its decisions still
        waiting for a reward are deleted (their propensities belong to the forgotten policy).
        Rewarded decisions stay as history. The state's version keeps counting, so another
        process's cached policy is reloaded. A reset of every regime also forgets the bandit's
        finished replays, so a warm-start may run again; a reset of some regimes keeps them (the
        other regimes still hold their rewards).

        Raises:
            NotFoundError: The bandit was deleted meanwhile.
        """
        with self._lock:
            try:
                with self._transaction() as db:
                    if db.execute("SELECT 1 FROM bandits WHERE bandit_id = ?", (record.bandit_id,)).fetchone() is None:
                        raise _deleted(record)
                    now = _now()
                    if set(regimes) >= set(record.regimes):
                        db.execute("DELETE FROM bandit_replays WHERE bandit_id = ? AND status != 'running'",
                                   (record.bandit_id,))
                    for regime in regimes:
                        key = (record.bandit_id, regime)
                        row = db.execute("SELECT version FROM bandit_state WHERE bandit_id = ? AND regime = ?",
                                         key).fetchone()
                        db.execute("DELETE FROM bandit_decisions WHERE bandit_id = ? AND regime = ? "
                                   "AND reward IS NULL", key)
                        if row is None:
                            continue  # never used: already at its prior
                        live = self._fresh(record, regime)
                        live.version = int(row["version"])
                        self._save(db, record, regime, live, now)
            finally:
                for regime in regimes:
                    self._live.pop((record.bandit_id, regime), None)

    def _forget(self, record: BanditRecord) -> None:
        self._records.pop(record.bandit_id, None)
        for regime in record.regimes:
            self._live.pop((record.bandit_id, regime), None)

    # -- state in memory and on disk ---------------------------------------------------------

    def _fresh(self, record: BanditRecord, regime: str) -> _Live:
        try:
            policy = make_policy(record.policy, len(record.arms), record.params)
        except ParamError as exc:  # saved by an older version that accepted, e.g., a reward_range beyond 1e100
            message = (f"bandit '{record.name}' was created with parameters no longer accepted ({exc}); "
                       f"delete it (DELETE /v1/bandit/{record.name}) and create it again")
            raise ConflictError(message, details=[{"loc": ["params", exc.param], "msg": message}]) from exc
        rng = np.random.default_rng([record.seed, record.regimes.index(regime)])
        state, rng_state = json.dumps(policy.to_state()), json.dumps(rng.bit_generator.state)
        return _Live(policy, rng, 0, _digest(state, rng_state), 0, None)

    def _load(self, db: sqlite3.Connection, record: BanditRecord, regime: str) -> _Live:
        """The regime's live policy, reloaded when the saved version differs from the cached one."""
        key = (record.bandit_id, regime)
        row = db.execute("SELECT version FROM bandit_state WHERE bandit_id = ? AND regime = ?", key).fetchone()
        live = self._live.get(key)
        if row is None:
            # A first use: make sure another process has not deleted the bandit meanwhile, or its
            # state would be written back for a bandit that no longer exists.
            if db.execute("SELECT 1 FROM bandits WHERE bandit_id = ?", (record.bandit_id,)).fetchone() is None:
                self._forget(record)
                raise _deleted(record)
            live = self._fresh(record, regime)
        elif live is None or live.version != row["version"]:
            live = self._restore(db, record, regime)
        self._live[key] = live
        return live

    def _restore(self, db: sqlite3.Connection, record: BanditRecord, regime: str) -> _Live:
        """The saved regime, refused with a 409 when it cannot be read back or holds inf / NaN."""
        row = db.execute("SELECT * FROM bandit_state WHERE bandit_id = ? AND regime = ?",
                         (record.bandit_id, regime)).fetchone()
        try:
            bit_generator = np.random.PCG64()
            bit_generator.state = json.loads(row["rng_state"])
            policy = restore_policy(json.loads(row["state"]))
        except (ValueError, TypeError, KeyError) as exc:  # json's and restore's errors are ValueErrors
            raise _broken(record, regime, f"it cannot be read back ({exc})") from exc
        if not policy.is_finite():
            raise _broken(record, regime, "it holds a non-finite number (inf or NaN)")
        return _Live(policy, np.random.Generator(bit_generator), int(row["version"]),
                     _digest(row["state"], row["rng_state"]), int(row["decisions"]), row["last_reward_at"])

    def _peek(self, record: BanditRecord, regime: str) -> tuple[_Live, str | None]:
        """Read-only view of a regime (nothing created or written)."""
        key = (record.bandit_id, regime)
        row = self._conn.execute("SELECT version, updated_at FROM bandit_state WHERE bandit_id = ? AND regime = ?",
                                 key).fetchone()
        if row is None:
            return self._fresh(record, regime), None
        live = self._live.get(key)
        if live is None or live.version != row["version"]:
            live = self._live[key] = self._restore(self._conn, record, regime)
        return live, row["updated_at"]

    def _save(self, db: sqlite3.Connection, record: BanditRecord, regime: str, live: _Live, now: str) -> None:
        try:  # allow_nan=False: an inf or NaN is refused here, never committed to poison later calls
            state = json.dumps(live.policy.to_state(), allow_nan=False)
        except ValueError as exc:
            raise _broken(record, regime, "this step made it non-finite, so it was not saved") from exc
        rng_state = json.dumps(live.rng.bit_generator.state)
        live.version += 1
        live.digest = _digest(state, rng_state)
        db.execute(
            "INSERT INTO bandit_state VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (bandit_id, regime) DO UPDATE SET "
            "state = excluded.state, rng_state = excluded.rng_state, pulls = excluded.pulls, "
            "decisions = excluded.decisions, version = excluded.version, updated_at = excluded.updated_at, "
            "last_reward_at = excluded.last_reward_at",
            (record.bandit_id, regime, state, rng_state, live.policy.total_pulls, live.decisions, live.version, now,
             live.last_reward_at))


def _already_rewarded(db: sqlite3.Connection, decision_id: str) -> ConflictError:
    row = db.execute("SELECT reward, rewarded_at FROM bandit_decisions WHERE decision_id = ?",
                     (decision_id,)).fetchone()
    return ConflictError(f"decision '{decision_id}' was already rewarded ({row['reward']} at {row['rewarded_at']}); "
                         "a decision takes one reward",
                         details=[{"loc": ["decision_id"], "msg": "already rewarded"}])


def _deleted(record: BanditRecord) -> NotFoundError:
    return NotFoundError(f"bandit '{record.name}' was deleted", details=[{"loc": ["bandit"], "msg": "unknown bandit"}])


def _broken(record: BanditRecord, regime: str, why: str) -> ConflictError:
    message = (f"the saved state of bandit '{record.name}' in regime '{regime}' is unusable: {why}; reset it with "
               f"POST /v1/bandit/{record.name}/reset (body {{\"regime\": \"{regime}\"}}) or delete the bandit")
    return ConflictError(message, details=[{"loc": ["regime"], "msg": message}])
