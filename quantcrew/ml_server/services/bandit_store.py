"""Bandits per regime, persisted in SQLite beside the model registry.

Three tables in the registry's database file (its own connection, WAL):

* ``bandits``: one row per bandit (name unique, policy, arms, regimes, params, seed);
* ``bandit_state``: one row per (bandit, regime) that has been used: the policy state and the
  random generator's state as JSON, counters, and a ``version`` bumped by every write;
* ``bandit_decisions``: every choice (arm, EXP3 propensity) and, once reported, its reward.

A policy instance per (bandit, regime) is created lazily and kept in memory. Every ``select``
and ``reward`` runs in one ``BEGIN IMMEDIATE`` transaction that checks the row's version
against the cached one (reloading when another process wrote), applies the step, and writes
the new state and the decision row together; a failure drops the cached instance so that the
next call reloads what was committed. Because the generator's state is saved with the policy,
a restarted server continues exactly the random stream it would have drawn.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from quantcrew.ml_server.errors import ConflictError, InvalidInputError, NotFoundError
from quantcrew.ml_server.schemas.bandit import (
    DEFAULT_ARMS,
    ArmEstimate,
    BanditDecision,
    BanditInfo,
    BanditParams,
    BanditRegimeState,
    BanditRewardResponse,
    BanditState,
)
from quantcrew.ml_server.schemas.regime import REGIME_LABELS
from quantcrew.ml_server.services.bandit_policies import ArmStats, BanditPolicy, ParamError, make_policy

__all__ = ["BanditRecord", "BanditStore"]

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


@dataclass
class _Live:
    """A regime's policy and generator in memory, with the version and hash of their saved state."""

    policy: BanditPolicy
    rng: np.random.Generator
    version: int
    digest: str
    decisions: int
    last_reward_at: str | None


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _digest(state: str, rng_state: str) -> str:
    return "sha256:" + hashlib.sha256(f"{state}\n{rng_state}".encode()).hexdigest()


def _invalid(message: str, *loc: str | int) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": ["body", *loc], "msg": message}])


def _labels(values: Sequence[str], what: str, low: int) -> tuple[str, ...]:
    out = tuple(str(v) for v in values)
    if not low <= len(out) <= 32:
        raise _invalid(f"{what} must hold {low} to 32 names, got {len(out)}", what)
    if any(not v.strip() for v in out):
        raise _invalid(f"{what} must not hold an empty name", what)
    if len(set(out)) != len(out):
        raise _invalid(f"{what} must be unique, got {list(out)}", what)
    return out


class BanditStore:
    """Creates bandits, records decisions and rewards; state survives a restart.

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

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- bandits -----------------------------------------------------------------------------

    def create(self, *, name: str, policy: str = "thompson_beta", arms: Sequence[str] = DEFAULT_ARMS,
               regimes: Sequence[str] = REGIME_LABELS, params: Mapping[str, Any] | None = None,
               seed: int = 0) -> BanditInfo:
        """Create a bandit.

        Raises:
            InvalidInputError: Unknown policy (listing the valid ones), bad params (naming the
                one), too few / repeated arms or regimes.
            ConflictError: The name is taken.
        """
        arm_names, regime_names = _labels(arms, "arms", 2), _labels(regimes, "regimes", 1)
        try:
            resolved = make_policy(policy, len(arm_names), params).params.to_dict()
        except ParamError as exc:
            loc = ("policy",) if exc.param == "policy" else ("params", exc.param)
            raise _invalid(str(exc), *loc) from exc
        record = BanditRecord(bandit_id="bandit-" + uuid.uuid4().hex[:16], name=name, policy=policy,
                              arms=arm_names, regimes=regime_names, params=resolved, seed=int(seed),
                              created_at=datetime.now(UTC))
        with self._lock:
            try:
                with self._transaction() as db:
                    db.execute("INSERT INTO bandits VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (record.bandit_id, name, policy, json.dumps(arm_names), json.dumps(regime_names),
                                json.dumps(resolved), record.seed, record.created_at.isoformat()))
            except sqlite3.IntegrityError as exc:
                raise ConflictError(f"a bandit named '{name}' exists already; choose another name",
                                    details=[{"loc": ["body", "name"], "msg": "name taken"}]) from exc
            self._records[record.bandit_id] = record
        return self._info(record, 0, 0)

    def get(self, ref: str, *, field: Sequence[str] = ("body", "bandit")) -> BanditRecord:
        """The bandit with id or name ``ref``.

        Raises:
            NotFoundError: No such bandit.
        """
        with self._lock:
            record = self._records.get(ref)
            if record is not None:
                return record
            row = self._conn.execute("SELECT * FROM bandits WHERE bandit_id = ?", (ref,)).fetchone() or \
                self._conn.execute("SELECT * FROM bandits WHERE name = ?", (ref,)).fetchone()
            if row is None:
                raise NotFoundError(f"no bandit with id or name '{ref}'",
                                    details=[{"loc": list(field), "msg": "unknown bandit"}])
            record = BanditRecord(bandit_id=row["bandit_id"], name=row["name"], policy=row["policy"],
                                  arms=tuple(json.loads(row["arms"])), regimes=tuple(json.loads(row["regimes"])),
                                  params=json.loads(row["params"]), seed=int(row["seed"]),
                                  created_at=datetime.fromisoformat(row["created_at"]))
            self._records[record.bandit_id] = record
            return record

    def list(self) -> list[BanditInfo]:
        """Every bandit, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT b.bandit_id, COALESCE(SUM(s.decisions), 0) AS d, COALESCE(SUM(s.pulls), 0) AS p "
                "FROM bandits b LEFT JOIN bandit_state s ON s.bandit_id = b.bandit_id "
                "GROUP BY b.bandit_id ORDER BY b.created_at, b.rowid").fetchall()
            return [self._info(self.get(r["bandit_id"]), int(r["d"]), int(r["p"])) for r in rows]

    def state(self, ref: str) -> BanditState:
        """Every regime's arm estimates, counters and estimated regret.

        Raises:
            NotFoundError: No such bandit.
        """
        with self._lock:
            record = self.get(ref, field=("path", "bandit"))
            pending = dict(self._conn.execute(
                "SELECT regime, COUNT(*) FROM bandit_decisions WHERE bandit_id = ? AND reward IS NULL "
                "GROUP BY regime", (record.bandit_id,)).fetchall())
            regimes, digests, rewarded = [], [], []
            for regime in record.regimes:
                live, updated_at = self._peek(record, regime)
                stats = live.policy.explain()
                digests.append(live.digest)
                rewarded.append(live.last_reward_at or "")
                known = [(s.estimate, i) for i, s in enumerate(stats) if s.estimate is not None and s.raw_pulls]
                regimes.append(BanditRegimeState(
                    regime=regime, decisions=live.decisions, pulls=live.policy.total_pulls,
                    pending=int(pending.get(regime, 0)), clipped=live.policy.clipped,
                    best_arm=record.arms[max(known)[1]] if known else None,
                    pseudo_regret=live.policy.pseudo_regret(), explanation=_estimates(record, stats),
                    updated_at=datetime.fromisoformat(updated_at) if updated_at else None))
        info = self._info(record, sum(r.decisions for r in regimes), sum(r.pulls for r in regimes))
        return BanditState(
            model_id=record.bandit_id, model_version=None, method_used=record.policy, fallback=False,
            data_hash="sha256:" + hashlib.sha256("\n".join(digests).encode()).hexdigest(), seed=record.seed,
            as_of=_time(max(rewarded)),
            bandit=info, regimes=regimes, pseudo_regret=sum(r.pseudo_regret for r in regimes),
            pulls=info.pulls)

    # -- decisions ---------------------------------------------------------------------------

    def select(self, ref: str, regime: str) -> BanditDecision:
        """Choose an arm for ``regime``; the decision and the new state are saved together.

        Raises:
            NotFoundError: No such bandit.
            InvalidInputError: ``regime`` is not one of the bandit's regimes (they are listed).
        """
        with self._lock:
            record = self.get(ref)
            if regime not in record.regimes:
                raise _invalid(f"regime '{regime}' is not one of bandit '{record.name}''s regimes "
                               f"{list(record.regimes)}", "regime")
            key = (record.bandit_id, regime)
            try:
                with self._transaction() as db:
                    live = self._load(db, record, regime)
                    digest = live.digest
                    arm = live.policy.select(live.rng)
                    propensity = live.policy.propensity(arm)
                    decision_id = "dec-" + uuid.uuid4().hex[:16]
                    now = _now()
                    db.execute("INSERT INTO bandit_decisions VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                               (decision_id, record.bandit_id, regime, arm, propensity, now))
                    live.decisions += 1
                    self._save(db, record, regime, live, now)
            except BaseException:
                self._live.pop(key, None)
                raise
            stats = live.policy.explain()
            policy = live.policy
        return BanditDecision(
            model_id=record.bandit_id, model_version=None, method_used=record.policy, fallback=False,
            data_hash=digest, seed=record.seed, as_of=_time(live.last_reward_at),
            decision_id=decision_id, bandit_id=record.bandit_id, bandit_name=record.name, regime=regime,
            arm=record.arms[arm], arm_index=arm, policy=record.policy,  # type: ignore[arg-type]
            propensity=propensity, explanation=_estimates(record, stats),
            reason=_reason(record, regime, arm, stats, policy), pseudo_regret=policy.pseudo_regret(),
            pulls=policy.total_pulls)

    def reward(self, decision_id: str, reward: float) -> BanditRewardResponse:
        """Learn from what decision ``decision_id`` earned.

        Raises:
            NotFoundError: No such decision.
            ConflictError: The decision was rewarded already.
            InvalidInputError: A non-finite reward.
        """
        reward = float(reward)
        if not math.isfinite(reward):
            raise _invalid(f"reward must be a finite number, got {reward}", "reward")
        with self._lock:
            row = self._conn.execute("SELECT * FROM bandit_decisions WHERE decision_id = ?",
                                     (decision_id,)).fetchone()
            if row is None:
                raise NotFoundError(f"no decision with id '{decision_id}'; use a decision_id returned by select",
                                    details=[{"loc": ["body", "decision_id"], "msg": "unknown decision"}])
            record = self.get(row["bandit_id"])
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
            except ConflictError:
                raise
            except BaseException:
                self._live.pop(key, None)
                raise
            policy = live.policy
            stats = policy.explain()
        return BanditRewardResponse(
            model_id=record.bandit_id, model_version=None, method_used=record.policy, fallback=False,
            data_hash=digest, seed=record.seed, as_of=_time(now), decision_id=decision_id,
            bandit_id=record.bandit_id, regime=regime, arm=record.arms[arm], arm_index=arm, reward=reward,
            clipped=clipped, explanation=_estimates(record, stats), pseudo_regret=policy.pseudo_regret(),
            pulls=policy.total_pulls)

    # -- state in memory and on disk ---------------------------------------------------------

    def _fresh(self, record: BanditRecord, regime: str) -> _Live:
        policy = make_policy(record.policy, len(record.arms), record.params)
        rng = np.random.default_rng([record.seed, record.regimes.index(regime)])
        state, rng_state = json.dumps(policy.to_state()), json.dumps(rng.bit_generator.state)
        return _Live(policy, rng, 0, _digest(state, rng_state), 0, None)

    def _load(self, db: sqlite3.Connection, record: BanditRecord, regime: str) -> _Live:
        """The regime's live policy, reloaded when the saved version differs from the cached one."""
        key = (record.bandit_id, regime)
        row = db.execute("SELECT version FROM bandit_state WHERE bandit_id = ? AND regime = ?", key).fetchone()
        live = self._live.get(key)
        if row is None:
            live = self._fresh(record, regime)
        elif live is None or live.version != row["version"]:
            live = self._restore(db, key)
        self._live[key] = live
        return live

    def _restore(self, db: sqlite3.Connection, key: tuple[str, str]) -> _Live:
        row = db.execute("SELECT * FROM bandit_state WHERE bandit_id = ? AND regime = ?", key).fetchone()
        bit_generator = np.random.PCG64()
        bit_generator.state = json.loads(row["rng_state"])
        return _Live(BanditPolicy.from_state(json.loads(row["state"])), np.random.Generator(bit_generator),
                     int(row["version"]), _digest(row["state"], row["rng_state"]), int(row["decisions"]),
                     row["last_reward_at"])

    def _peek(self, record: BanditRecord, regime: str) -> tuple[_Live, str | None]:
        """Read-only view of a regime (nothing created or written)."""
        key = (record.bandit_id, regime)
        row = self._conn.execute("SELECT version, updated_at FROM bandit_state WHERE bandit_id = ? AND regime = ?",
                                 key).fetchone()
        if row is None:
            return self._fresh(record, regime), None
        live = self._live.get(key)
        if live is None or live.version != row["version"]:
            live = self._live[key] = self._restore(self._conn, key)
        return live, row["updated_at"]

    def _save(self, db: sqlite3.Connection, record: BanditRecord, regime: str, live: _Live, now: str) -> None:
        state, rng_state = json.dumps(live.policy.to_state()), json.dumps(live.rng.bit_generator.state)
        live.version += 1
        live.digest = _digest(state, rng_state)
        db.execute(
            "INSERT INTO bandit_state VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (bandit_id, regime) DO UPDATE SET "
            "state = excluded.state, rng_state = excluded.rng_state, pulls = excluded.pulls, "
            "decisions = excluded.decisions, version = excluded.version, updated_at = excluded.updated_at, "
            "last_reward_at = excluded.last_reward_at",
            (record.bandit_id, regime, state, rng_state, live.policy.total_pulls, live.decisions, live.version, now,
             live.last_reward_at))

    @staticmethod
    def _info(record: BanditRecord, decisions: int, pulls: int) -> BanditInfo:
        return BanditInfo(bandit_id=record.bandit_id, name=record.name, policy=record.policy,  # type: ignore[arg-type]
                          arms=list(record.arms), regimes=list(record.regimes),
                          params=BanditParams.model_validate(record.params), seed=record.seed,
                          created_at=record.created_at, decisions=decisions, pulls=pulls)


def _time(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def _already_rewarded(db: sqlite3.Connection, decision_id: str) -> ConflictError:
    row = db.execute("SELECT reward, rewarded_at FROM bandit_decisions WHERE decision_id = ?",
                     (decision_id,)).fetchone()
    return ConflictError(f"decision '{decision_id}' was already rewarded ({row['reward']} at {row['rewarded_at']}); "
                         "a decision takes one reward",
                         details=[{"loc": ["body", "decision_id"], "msg": "already rewarded"}])


def _estimates(record: BanditRecord, stats: list[ArmStats]) -> list[ArmEstimate]:
    return [ArmEstimate(arm=record.arms[i], arm_index=i, estimate=s.estimate, uncertainty=s.uncertainty,
                        pulls=s.pulls, raw_pulls=s.raw_pulls, score=s.score, mean_reward=s.mean_reward)
            for i, s in enumerate(stats)]


def _g(x: float) -> str:
    return f"{x:.3g}"


def _reason(record: BanditRecord, regime: str, arm: int, stats: list[ArmStats], policy: BanditPolicy) -> str:
    """One sentence a person reads: why this arm."""
    name, s = record.arms[arm], stats[arm]
    pulls = f"{s.pulls:.1f} discounted pulls" if policy.name == "discounted_thompson" else f"{s.pulls:g} pulls"
    if policy.name in ("ucb1", "sliding_window_ucb"):
        recent = f" in the last {policy.params.window} rewards" if policy.name == "sliding_window_ucb" else ""
        if s.score is None or s.estimate is None or s.uncertainty is None:
            return (f"{name} has no reward{recent} in regime '{regime}' yet; UCB plays every such arm before "
                    "comparing upper confidence bounds")
        return (f"{name} has the highest upper confidence bound {_g(s.score)} (estimate {_g(s.estimate)} "
                f"± {_g(s.uncertainty)} after {pulls}{recent})")
    if policy.name == "exp3":
        earned = f"mean reward {_g(s.estimate)} over {s.raw_pulls} pulls" if s.estimate is not None else "no reward yet"
        return f"EXP3 drew {name} with probability {s.score or 0.0:.2f} ({earned})"
    sample = "" if s.score is None else f" {_g(s.score)}"
    return (f"{name} drew the highest posterior sample{sample} (posterior mean {_g(s.estimate or 0.0)} "
            f"± {_g(s.uncertainty or 0.0)} after {pulls})")
