"""Deployment stages of model versions, and sticky A/B routing between them.

A model name (say ``ensemble-spy``) has versions in the registry; each deployed version has one
stage:

* ``full``: answers every request not taken by a candidate (one per name);
* ``canary``: a candidate answering a fixed share of requests;
* ``gradual``: a candidate whose share grows linearly from ``share`` to 1.0 over ``ramp_seconds``,
  then is promoted to ``full`` by the next request routed (the old full version is retired);
* ``shadow``: runs beside the answering version, its output logged and never returned (several
  allowed);
* ``retired``: no longer routed.

One candidate (canary or gradual) per name at a time: deploying another retires the first.

Routing is sticky: a request key (a client id, a symbol, a session) falls into a bucket in
[0, 1) taken from ``sha256(f"{name}:{key}")``, the same in every process and after restarts, so a
key sees one version for as long as the shares do not move past its bucket. The candidate
answers when ``bucket < share``; as a gradual share grows, keys only ever move from the full
version to the candidate, never back.

Three tables in an SQLite file (sqlite-utils, WAL; its own connection, one lock): ``deployments``
(one row per model id), ``shadow_log`` (shadow outputs) and ``deployment_events`` (every stage
change, with its action, reason, actor and gate verdict: the versions a set retires are recorded
too, in the same transaction). Writes run in ``BEGIN IMMEDIATE`` transactions, so that the
retire-and-set steps stay atomic across processes too.

The events give the name's champions in order: :meth:`DeploymentStore.previous_champions` lists the
versions that were ``full`` before the current one, newest first, leaving out any that a rollback
took off ``full`` (a rollback never goes back to the version it rolled back from).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from quantcrew.ml_server.errors import ConflictError, InvalidInputError, NotFoundError
from quantcrew.ml_server.generation import Generation
from quantcrew.ml_server.schemas.ensemble import DeploymentInfo
from quantcrew.ml_server.schemas.lineage import DeploymentEvent
from quantcrew.ml_server.transaction import immediate

__all__ = ["STAGES", "Deployment", "DeploymentStore", "Route", "bucket", "deployment_info"]

STAGES: tuple[str, ...] = ("shadow", "canary", "gradual", "full", "retired")

_CANDIDATES = ("canary", "gradual")
_ROUTED = ("shadow", "canary", "gradual", "full")
_DEFAULT_GRADUAL_SHARE = 0.1


@dataclass(frozen=True)
class Deployment:
    """A model version's deployment stage.

    Attributes:
        model_id: Registry id of the version (primary key).
        name: The model name the version belongs to (routing is per name).
        version: The version number.
        stage: One of :data:`STAGES`.
        share: Canary: the fixed share of requests; gradual: the starting share; full: 1.0;
            shadow and retired: 0.0.
        ramp_seconds: Gradual only (0 otherwise): the share grows linearly from ``share`` to
            1.0 over this many seconds from ``started_at``.
        started_at: When the version entered this stage (a gradual ramp's start).
        updated_at: When the row last changed.
    """

    model_id: str
    name: str
    version: int
    stage: str
    share: float
    ramp_seconds: float
    started_at: datetime
    updated_at: datetime

    def current_share(self, now: datetime) -> float:
        """The share of requests this version answers at ``now`` (in [0, 1])."""
        if self.stage == "full":
            return 1.0
        if self.stage == "canary":
            return self.share
        if self.stage != "gradual":
            return 0.0
        elapsed = (_utc(now) - self.started_at).total_seconds()
        if self.ramp_seconds <= 0 or elapsed >= self.ramp_seconds:
            return 1.0
        return self.share + (1.0 - self.share) * max(0.0, elapsed) / self.ramp_seconds


@dataclass(frozen=True)
class Route:
    """Which versions serve one request.

    Attributes:
        primary: The version that answers this request.
        variant: ``"full"``, ``"canary"`` or ``"gradual"``: the primary's stage.
        shadows: Versions that also run, are logged and are not returned.
        bucket: The request key's sticky bucket in [0, 1).
    """

    primary: Deployment
    variant: str
    shadows: list[Deployment]
    bucket: float


def bucket(name: str, request_key: str) -> float:
    """The sticky bucket in [0, 1) of ``request_key`` for model ``name``.

    Taken from ``sha256(f"{name}:{request_key}")`` (its top 53 bits, so the float is exact and
    below 1): the same key gets the same bucket in every process and after restarts, and
    buckets of different names are independent.
    """
    digest = hashlib.sha256(f"{name}:{request_key}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


_SCHEMA = {
    "model_id": str, "name": str, "version": int, "stage": str, "share": float, "ramp_seconds": float,
    "started_at": str, "updated_at": str, "created_at": str,
}
_LOG_SCHEMA = {
    "id": int, "model_id": str, "primary_model_id": str, "request_key": str, "output": str, "at": str,
}
_EVENT_SCHEMA = {
    "id": int, "at": str, "model_id": str, "name": str, "version": int, "from_stage": str, "to_stage": str,
    "action": str, "reason": str, "actor": str, "gate": str,
}
_EVENT_NULLABLE = {"id", "from_stage", "reason", "actor", "gate"}
_ROUTES_KEPT = 1024
"""Most model names whose routed versions are kept read."""


class DeploymentStore:
    """Deploys model versions by stage, routes requests between them, logs shadow outputs.

    Args:
        db_path: SQLite file (the registry's, typically) holding ``deployments`` and
            ``shadow_log``.
    """

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30, isolation_level=None)
        self._db = sqlite_utils.Database(conn)
        self._db.enable_wal()
        self._lock = threading.RLock()
        # name -> (generation when read, its routed versions): a request by name reads no statement while
        # no process on the file has written (the registry's counter: see quantcrew.ml_server.generation)
        self._generation = Generation.of(self.db_path)
        self._routes: dict[str, tuple[int, builtins.list[Deployment]]] = {}
        # one write transaction taken up front: replicas on a shared home may open a fresh file together
        with self._transaction():
            deployments = self._db.table("deployments")
            deployments.create(_SCHEMA, pk="model_id", not_null=set(_SCHEMA), if_not_exists=True)
            deployments.create_index(["name", "stage"], if_not_exists=True)
            log = self._db.table("shadow_log")
            log.create(_LOG_SCHEMA, pk="id", not_null=set(_LOG_SCHEMA) - {"id"}, if_not_exists=True)
            log.create_index(["model_id", "at"], if_not_exists=True)
            events = self._db.table("deployment_events")
            events.create(_EVENT_SCHEMA, pk="id", not_null=set(_EVENT_SCHEMA) - _EVENT_NULLABLE, if_not_exists=True)
            events.create_index(["name", "id"], if_not_exists=True)
            events.create_index(["model_id", "id"], if_not_exists=True)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.conn.close()
        self._generation.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db.conn)

    @contextmanager
    def _change(self) -> Iterator[sqlite3.Connection]:
        """A write to the deployments: every process's kept routes are read again after its commit."""
        with self._lock:
            try:
                with self._transaction() as db:
                    yield db
            finally:
                self._generation.bump()  # also after a rollback: a bump too many costs one read

    # -- writing -----------------------------------------------------------------------------

    def set(self, *, model_id: str, name: str, version: int, stage: str, share: float | None = None,
            ramp_seconds: float | None = None, now: datetime | None = None, action: str = "stage",
            reason: str | None = None, actor: str | None = None,
            gate: dict[str, Any] | None = None) -> Deployment:
        """Deploy ``model_id`` (version ``version`` of ``name``) at ``stage``.

        Setting ``full`` retires the name's previous full version; setting ``canary`` or
        ``gradual`` retires the name's other candidate (one at a time). Shadows are not limited.
        ``started_at`` moves to ``now`` when the stage changes, and on every ``gradual`` set (the
        ramp restarts); re-setting a canary's share keeps it.

        Args:
            model_id: Registry id of the version.
            name: Model name the version belongs to.
            version: Version number (>= 1).
            stage: One of :data:`STAGES`.
            share: Canary: required, 0 < share < 1. Gradual: the starting share,
                0 <= share < 1 (default 0.1). Refused for other stages.
            ramp_seconds: Gradual: required, > 0. Refused for other stages.
            now: The time to record (default: the current UTC time).
            action: What the step is, recorded with it: ``stage`` (by hand), ``promote``,
                ``rollback``, ``train``, ``auto``. Versions it retires are recorded as ``replaced``
                (``rollback`` for the version a rollback retires).
            reason: Why, in words.
            actor: Who asked.
            gate: The gate verdict behind the step (JSON), when there was one.

        Raises:
            InvalidInputError: An unknown stage (the valid ones are listed), a share or ramp out
                of range, missing, or given for a stage that does not use it; each names its field.
            ConflictError: ``model_id`` is deployed already under another name or version.
        """
        share_value, ramp_value = _validate(model_id=model_id, name=name, version=version, stage=stage,
                                            share=share, ramp_seconds=ramp_seconds)
        at = _iso(_utc(now) if now is not None else datetime.now(UTC))
        with self._change() as db:
            row = db.execute("SELECT name, version, stage, started_at, created_at FROM deployments "
                             "WHERE model_id = ?", (model_id,)).fetchone()
            if row is not None and (row[0], int(row[1])) != (name, int(version)):
                raise ConflictError(
                    f"model '{model_id}' is deployed as '{row[0]}' version {row[1]}, not '{name}' version {version}",
                    details=[{"loc": ["model_id"], "msg": "deployed under another name or version"}])
            if action == "auto" and row is not None and row[2] == stage:
                return self._get(db, model_id)  # the same automatic step, made by another process meanwhile
            keep_start = row is not None and row[2] == stage and stage != "gradual"
            started_at = row[3] if keep_start and row is not None else at
            created_at = row[4] if row is not None else at
            retiring: tuple[str, ...] = ("full",) if stage == "full" else _CANDIDATES if stage in _CANDIDATES else ()
            if retiring:
                retired_action = "rollback" if action == "rollback" else "replaced"
                for other in self._retire(db, name, retiring, model_id, at):
                    self._event(db, at=at, model_id=other[0], name=name, version=int(other[1]), from_stage=other[2],
                                to_stage="retired", action=retired_action,
                                reason=f"replaced by {model_id} (version {version})" + (f": {reason}" if reason
                                                                                        else ""),
                                actor=actor, gate=None)
            self._event(db, at=at, model_id=model_id, name=name, version=int(version),
                        from_stage=row[2] if row is not None else None, to_stage=stage, action=action,
                        reason=reason, actor=actor, gate=gate)
            db.execute(
                "INSERT INTO deployments (model_id, name, version, stage, share, ramp_seconds, started_at, "
                "updated_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (model_id) DO UPDATE SET "
                "stage = excluded.stage, share = excluded.share, ramp_seconds = excluded.ramp_seconds, "
                "started_at = excluded.started_at, updated_at = excluded.updated_at",
                (model_id, name, int(version), stage, share_value, ramp_value, started_at, at, created_at))
        deployment = self.get(model_id)
        assert deployment is not None  # written just above
        return deployment

    @staticmethod
    def _retire(db: sqlite3.Connection, name: str, stages: tuple[str, ...], keep: str,
                at: str) -> builtins.list[tuple[str, int, str]]:
        """Retire the name's other versions at ``stages``; returns (model_id, version, stage) of each."""
        marks = ", ".join("?" for _ in stages)
        where = f"name = ? AND model_id != ? AND stage IN ({marks})"
        found = [(str(r[0]), int(r[1]), str(r[2])) for r in db.execute(
            f"SELECT model_id, version, stage FROM deployments WHERE {where}", (name, keep, *stages))]
        db.execute(f"UPDATE deployments SET stage = 'retired', share = 0.0, ramp_seconds = 0.0, started_at = ?, "
                   f"updated_at = ? WHERE {where}", (at, at, name, keep, *stages))
        return found

    @staticmethod
    def _event(db: sqlite3.Connection, *, at: str, model_id: str, name: str, version: int, from_stage: str | None,
               to_stage: str, action: str, reason: str | None, actor: str | None,
               gate: dict[str, Any] | None) -> None:
        db.execute("INSERT INTO deployment_events (at, model_id, name, version, from_stage, to_stage, action, "
                   "reason, actor, gate) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (at, model_id, name, version, from_stage, to_stage, action, reason, actor,
                    json.dumps(gate, sort_keys=True) if gate is not None else None))

    def forget(self, model_id: str) -> bool:
        """Drop a retired version's deployment row (its model was deleted); its events stay. Returns whether
        a row was dropped (a version deployed at any other stage is never dropped)."""
        with self._change() as db:
            cursor = db.execute("DELETE FROM deployments WHERE model_id = ? AND stage = 'retired'", (model_id,))
            return cursor.rowcount > 0

    # -- history -----------------------------------------------------------------------------

    def events(self, *, name: str | None = None, model_id: str | None = None,
               limit: int = 1000) -> builtins.list[DeploymentEvent]:
        """Recorded stage changes (of a name or a version), oldest first, the latest ``limit``."""
        clauses, args = [], []
        if name is not None:
            clauses.append("name = ?")
            args.append(name)
        if model_id is not None:
            clauses.append("model_id = ?")
            args.append(model_id)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            cursor = self._db.conn.execute(f"SELECT * FROM deployment_events {where} ORDER BY id DESC LIMIT ?",
                                           (*args, int(limit)))
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
        return [_event(r) for r in reversed(rows)]

    def champion(self, name: str) -> Deployment | None:
        """The name's full version, or None."""
        with self._lock:
            rows = builtins.list(self._db.table("deployments").rows_where(
                "name = ? AND stage = 'full'", [name], limit=1))
        return _deployment(rows[0]) if rows else None

    def previous_champions(self, name: str) -> builtins.list[str]:
        """Versions of ``name`` that were full before its current full version, newest first.

        Left out: the current full version, and a version whose last step off ``full`` was a
        rollback (rolled back from: it is no rollback target).
        """
        last_full: dict[str, int] = {}
        rolled_back: dict[str, bool] = {}
        for e in self.events(name=name, limit=1_000_000):
            if e.to_stage == "full":
                last_full[e.model_id] = e.id
                rolled_back[e.model_id] = False
            elif e.from_stage == "full":
                rolled_back[e.model_id] = e.action == "rollback"
        current = self.champion(name)
        order = sorted(last_full, key=lambda m: last_full[m], reverse=True)
        return [m for m in order if (current is None or m != current.model_id) and not rolled_back[m]]

    # -- reading -----------------------------------------------------------------------------

    @staticmethod
    def _get(db: sqlite3.Connection, model_id: str) -> Deployment:
        cursor = db.execute("SELECT * FROM deployments WHERE model_id = ?", (model_id,))
        names = [d[0] for d in cursor.description]
        return _deployment(dict(zip(names, cursor.fetchone(), strict=True)))

    def get(self, model_id: str) -> Deployment | None:
        """The deployment of ``model_id``, or None when it was never deployed."""
        with self._lock:
            rows = list(self._db.table("deployments").rows_where("model_id = ?", [model_id]))
        return _deployment(rows[0]) if rows else None

    def list(self, name: str | None = None) -> builtins.list[Deployment]:
        """Every deployment (of ``name`` when given), newest first (by first deployment)."""
        where, args = ("name = ?", [name]) if name is not None else (None, [])
        with self._lock:
            rows = builtins.list(self._db.table("deployments").rows_where(
                where, args, order_by="created_at DESC, version DESC, rowid DESC"))
        return [_deployment(r) for r in rows]

    # -- routing -----------------------------------------------------------------------------

    def route(self, name: str, request_key: str, now: datetime | None = None) -> Route:
        """Which version answers ``request_key`` for model ``name``, and which shadows run.

        The key's bucket ``u`` (see :func:`bucket`) picks the candidate (canary or gradual) when
        ``u < candidate.current_share(now)``, else the full version. With a candidate and no
        full version, the candidate answers everything. A gradual whose share has reached 1.0
        is promoted to full here (the old full version retired).

        Raises:
            NotFoundError: ``name`` has neither a full version nor a candidate.
        """
        at = _utc(now) if now is not None else datetime.now(UTC)
        with self._lock:
            live = self._routed(name)
            candidate = _candidate(live)
            if candidate is not None and candidate.stage == "gradual" and candidate.current_share(at) >= 1.0:
                self.set(model_id=candidate.model_id, name=name, version=candidate.version, stage="full", now=at,
                         action="auto", reason="gradual rollout reached 100%")
                live = self._routed(name)
        return _pick(name, live, bucket(name, request_key), at)

    def peek(self, name: str, request_key: str, now: datetime | None = None) -> Route | None:
        """:meth:`route`'s answer when it needs no statement, no write and no lock; else None.

        That is: the name's versions were read since the last write by any process on the file, none
        is a shadow (a shadow's answer is written to the shadow log) and no gradual rollout is due to
        be promoted. A request by name may then be answered on the event loop (see
        :mod:`quantcrew.ml_server.offload`); None sends it to a worker thread, which calls :meth:`route`.
        """
        kept = self._routes.get(name)  # one dict read: atomic, safe beside a writer holding the lock
        if kept is None or kept[0] != self._generation.read():
            return None
        live = kept[1]
        at = _utc(now) if now is not None else datetime.now(UTC)
        candidate = _candidate(live)
        if any(d.stage == "shadow" for d in live) or (
                candidate is not None and candidate.stage == "gradual" and candidate.current_share(at) >= 1.0):
            return None
        try:
            return _pick(name, live, bucket(name, request_key), at)
        except NotFoundError:
            return None  # the thread's route() raises it, with the request's own error path

    def _routed(self, name: str) -> builtins.list[Deployment]:
        """The name's full, candidate and shadow versions, newest first; read again only after a write."""
        generation = self._generation.read()  # taken before the read it tags
        kept = self._routes.get(name)
        if kept is not None and kept[0] == generation:
            return list(kept[1])
        marks = ", ".join("?" for _ in _ROUTED)
        cursor = self._db.conn.execute(
            f"SELECT * FROM deployments WHERE name = ? AND stage IN ({marks}) ORDER BY created_at DESC, version DESC",
            [name, *_ROUTED])
        columns = [d[0] for d in cursor.description]
        live = [_deployment(dict(zip(columns, r, strict=True))) for r in cursor.fetchall()]
        if len(self._routes) >= _ROUTES_KEPT:
            self._routes.clear()
        self._routes[name] = (generation, live)
        return list(live)

    # -- shadow log --------------------------------------------------------------------------

    def log_shadow(self, *, model_id: str, primary_model_id: str, request_key: str, output: dict[str, Any],
                   at: datetime | None = None) -> None:
        """Record what shadow ``model_id`` answered for a request that ``primary_model_id`` served.

        Raises:
            InvalidInputError: ``output`` cannot be written as JSON (finite numbers, str keys).
        """
        try:
            text = json.dumps(output, allow_nan=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise _invalid(f"shadow output must be JSON with finite numbers: {exc}", "output") from exc
        stamp = _iso(_utc(at) if at is not None else datetime.now(UTC))
        with self._lock, self._transaction() as db:
            db.execute("INSERT INTO shadow_log (model_id, primary_model_id, request_key, output, at) "
                       "VALUES (?, ?, ?, ?, ?)", (model_id, primary_model_id, request_key, text, stamp))

    def shadow_log(self, model_id: str, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The latest ``limit`` shadow outputs of ``model_id``, newest first.

        Each entry: ``model_id``, ``primary_model_id``, ``request_key``, ``output`` (the dict
        logged) and ``at`` (a UTC datetime).

        Raises:
            InvalidInputError: ``limit`` below 1.
        """
        if int(limit) < 1:
            raise _invalid(f"limit must be at least 1, got {limit}", "limit")
        with self._lock:
            rows = self._db.table("shadow_log").rows_where("model_id = ?", [model_id], order_by="at DESC, id DESC",
                                                           limit=int(limit))
            return [{"model_id": r["model_id"], "primary_model_id": r["primary_model_id"],
                     "request_key": r["request_key"], "output": json.loads(r["output"]),
                     "at": datetime.fromisoformat(r["at"])} for r in rows]


def _validate(*, model_id: str, name: str, version: int, stage: str, share: float | None,
              ramp_seconds: float | None) -> tuple[float, float]:
    """The (share, ramp_seconds) to store for ``stage``, or an error naming the bad field."""
    if not model_id or not model_id.strip():
        raise _invalid("model_id must not be empty", "model_id")
    if not name or not name.strip():
        raise _invalid("name must not be empty", "name")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _invalid(f"version must be an integer >= 1, got {version!r}", "version")
    if stage not in STAGES:
        raise _invalid(f"unknown stage '{stage}'; valid stages: {', '.join(STAGES)}", "stage")
    if stage not in _CANDIDATES:
        for field, value in (("share", share), ("ramp_seconds", ramp_seconds)):
            if value is not None:
                raise _invalid(f"{field} is not used by stage '{stage}' (only by canary or gradual); leave it out",
                               field)
        return (1.0 if stage == "full" else 0.0), 0.0
    if stage == "canary":
        if ramp_seconds is not None:
            raise _invalid("ramp_seconds is used by stage 'gradual' only, not 'canary'; leave it out",
                           "ramp_seconds")
        if share is None or not (math.isfinite(share) and 0.0 < share < 1.0):
            raise _invalid(f"a canary needs a share with 0 < share < 1, got {share}", "share")
        return float(share), 0.0
    start = _DEFAULT_GRADUAL_SHARE if share is None else share
    if not (math.isfinite(start) and 0.0 <= start < 1.0):
        raise _invalid(f"a gradual rollout needs a starting share with 0 <= share < 1, got {start}", "share")
    if ramp_seconds is None or not (math.isfinite(ramp_seconds) and ramp_seconds > 0):
        raise _invalid(f"a gradual rollout needs ramp_seconds > 0, got {ramp_seconds}", "ramp_seconds")
    return float(start), float(ramp_seconds)


def _invalid(message: str, field: str) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": [field], "msg": message}])


def _candidate(live: list[Deployment]) -> Deployment | None:
    return next((d for d in live if d.stage in _CANDIDATES), None)


def _pick(name: str, live: list[Deployment], u: float, at: datetime) -> Route:
    """The route of bucket ``u`` among the name's ``live`` versions at ``at`` (see :meth:`DeploymentStore.route`)."""
    candidate = _candidate(live)
    full = next((d for d in live if d.stage == "full"), None)
    shadows = [d for d in live if d.stage == "shadow"]
    if candidate is not None and (full is None or u < candidate.current_share(at)):
        return Route(primary=candidate, variant=candidate.stage, shadows=shadows, bucket=u)
    if full is None:
        raise NotFoundError(f"no deployed version of '{name}'",
                            details=[{"loc": ["name"], "msg": "no full, canary or gradual version"}])
    return Route(primary=full, variant="full", shadows=shadows, bucket=u)


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    # Fixed width (always microseconds, always +00:00) so that text order is time order.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _deployment(row: dict[str, Any]) -> Deployment:
    return Deployment(model_id=row["model_id"], name=row["name"], version=int(row["version"]), stage=row["stage"],
                      share=float(row["share"]), ramp_seconds=float(row["ramp_seconds"]),
                      started_at=datetime.fromisoformat(row["started_at"]),
                      updated_at=datetime.fromisoformat(row["updated_at"]))


def _event(row: dict[str, Any]) -> DeploymentEvent:
    return DeploymentEvent(id=int(row["id"]), at=datetime.fromisoformat(row["at"]), model_id=row["model_id"],
                           name=row["name"], version=int(row["version"]), from_stage=row["from_stage"],
                           to_stage=row["to_stage"], action=row["action"], reason=row["reason"], actor=row["actor"],
                           gate=json.loads(row["gate"]) if row["gate"] else None)


def deployment_info(d: Deployment) -> DeploymentInfo:
    """The wire form of a deployment, its current share computed now."""
    return DeploymentInfo(model_id=d.model_id, name=d.name, version=d.version, stage=d.stage, share=d.share,
                          current_share=d.current_share(datetime.now(UTC)), ramp_seconds=d.ramp_seconds,
                          started_at=d.started_at, updated_at=d.updated_at)
