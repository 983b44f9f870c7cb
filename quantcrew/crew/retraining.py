"""Retraining where the data is: a training schedule's firing checks, retrains, gates, promotes, rolls back.

The server holds no market data, so the triggers are evaluated here, on the agent side, by a
schedule of kind ``retrain`` (:data:`RETRAIN_KIND`). Each firing, per symbol, for the model name
``ensemble-<symbol>``:

1. **Watch the champion.** If the full version was promoted by an earlier firing and its live
   quality (``GET /v1/monitor/models/{id}``, a window judged on at least the server's minimum
   sample count) is past the rollback threshold, it is rolled back to the previous champion
   (``POST /v1/models/{name}/rollback``; the server records it and raises an alert).
2. **Check the triggers**: ``drift`` (``POST /v1/monitor/drift`` on the symbol's recent bars:
   the server's verdict), ``quality`` (the champion's judged live quality past its threshold), or
   ``schedule`` (the policy says to retrain on every firing). The first that holds is the cause.
3. **Cooldown.** A cause that started a retraining less than ``cooldown_s`` ago does not start
   another: one drifted week is one retraining, not a storm.
4. **Train the challenger** on the bars before the holdout (the last ``holdout_bars``), deployed
   as ``shadow`` with ``trigger`` = the cause, so it answers nothing yet.
5. **Gate**: ``POST /v1/models/compare`` scores champion and challenger on the holdout bars
   neither was trained on (a paired test with a minimum sample size, server side).
6. **Promote** through canary to full when the gate passes, or **retire** the challenger with the
   gate's reason. With no champion yet, the challenger's own quality gate decides (it is promoted
   when the server stored it as gated ``passed``).

Every step is a row of ``retrain_events`` (runs store's SQLite file) with its cause, model ids,
detail and time; the server records its side (lineage, deployment events, alerts).

Light on purpose: no crewai, no HTTP client at import (the client is passed in).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from quantcrew.crew.runs import open_database
from quantcrew.data.ohlcv import OHLCV

__all__ = [
    "CAUSES",
    "RETRAIN_KIND",
    "Cause",
    "RetrainEvent",
    "RetrainPolicy",
    "RetrainReport",
    "RetrainServer",
    "RetrainStore",
    "retrain_symbol",
]

RETRAIN_KIND = "retrain"
"""The schedule kind whose firings run :func:`retrain_symbol` for each of its symbols."""

Cause = Literal["drift", "quality", "schedule"]
CAUSES: tuple[Cause, ...] = ("drift", "quality", "schedule")

Step = Literal["checked", "rolled_back", "triggered", "cooldown", "trained", "gated", "promoted", "rejected",
               "failed", "idle"]


@dataclass(frozen=True)
class RetrainPolicy:
    """What one training schedule watches and when it retrains (the schedule's inputs).

    Attributes:
        symbols: The symbols whose ``ensemble-<symbol>`` models are watched.
        on_drift: Retrain when the server's drift verdict on the recent bars is ``drifted``.
        quality_metric: The live-quality metric watched (e.g. ``log_loss``, ``hit_rate``, ``sharpe``).
        quality_limit: Retrain when the metric is past this (above for losses, below for scores);
            None: quality never triggers.
        rollback_limit: Roll a promoted champion back when the metric is past this; None: never.
        always: Retrain on every firing (the schedule itself is the trigger).
        cooldown_s: Seconds during which a cause that started a retraining cannot start another.
        drift_bars: Recent bars sent for the drift check.
        holdout_bars: Last bars kept out of the challenger's training and used by the gate.
        train_bars: Most recent bars (before the holdout) the challenger is trained on; None: all of them.
            After a regime change, the bars before it teach the old market.
        train: Extra fields for the training request (epochs, members, ...).
    """

    symbols: tuple[str, ...]
    on_drift: bool = True
    quality_metric: str = "log_loss"
    quality_limit: float | None = None
    rollback_limit: float | None = None
    always: bool = False
    cooldown_s: float = 7 * 86400.0
    drift_bars: int = 120
    holdout_bars: int = 120
    train_bars: int | None = None
    train: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, Any]) -> RetrainPolicy:
        """The policy a schedule's inputs describe.

        Raises:
            ValueError: an unknown key, no symbols, or a value of the wrong type or range (named).
        """
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(inputs) - known)
        if unknown:
            raise ValueError(f"unknown retrain input(s) {unknown}; valid: {sorted(known)}")
        raw = inputs.get("symbols")
        symbols = tuple(s.strip() for s in (raw.split(",") if isinstance(raw, str) else (raw or [])) if s.strip())
        if not symbols:
            raise ValueError("symbols: a retrain schedule needs at least one symbol")
        values = {k: v for k, v in inputs.items() if k != "symbols"}
        policy = cls(symbols=symbols, **values)
        if policy.cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {policy.cooldown_s}")
        for name in ("drift_bars", "holdout_bars"):
            value = getattr(policy, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 10:
                raise ValueError(f"{name} must be a whole number of bars >= 10, got {value!r}")
        if policy.train_bars is not None and (isinstance(policy.train_bars, bool)
                                              or not isinstance(policy.train_bars, int) or policy.train_bars < 100):
            raise ValueError(f"train_bars must be a whole number of bars >= 100 or null, got {policy.train_bars!r}")
        if not isinstance(policy.train, Mapping):
            raise ValueError("train must be a mapping of training request fields")
        return policy

    def past(self, value: float, limit: float) -> bool:
        """Whether ``value`` is worse than ``limit`` for :attr:`quality_metric` (losses: above; scores: below)."""
        return value > limit if _lower_is_better(self.quality_metric) else value < limit


def _lower_is_better(metric: str) -> bool:
    return metric in {"log_loss", "brier", "calibration_error", "ece", "mse", "mae"}


@dataclass(frozen=True)
class RetrainEvent:
    """One recorded step of a firing."""

    symbol: str
    name: str
    step: Step
    cause: str | None = None
    model_id: str | None = None
    champion_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    at: str = ""


@dataclass
class RetrainReport:
    """What one firing did for one symbol: its events in order, and the final state."""

    symbol: str
    name: str
    events: list[RetrainEvent] = field(default_factory=list)

    @property
    def outcome(self) -> Step:
        """The last step taken (``idle`` when nothing triggered)."""
        return self.events[-1].step if self.events else "idle"

    @property
    def failed(self) -> bool:
        return any(e.step == "failed" for e in self.events)


class RetrainServer(Protocol):
    """The server calls a firing needs (implemented over the HTTP client by :mod:`quantcrew.crew.retrain_client`)."""

    def champion(self, name: str) -> tuple[str | None, dict[str, Any]]:
        """The name's full version id (None when none) and its lineage (``trigger``, ``promoted_by``...)."""

    def drift(self, model_id: str, bars: OHLCV) -> tuple[bool, dict[str, Any]]:
        """The server's drift verdict on ``bars`` for ``model_id`` and the report's summary."""

    def quality(self, model_id: str, metric: str) -> tuple[float | None, int, bool]:
        """The live ``metric`` of ``model_id``: value, sample count, judged (enough samples)."""

    def train(self, symbol: str, name: str, bars: OHLCV, *, trigger: str, fields: Mapping[str, Any]) -> str:
        """Train a challenger on ``bars`` deployed as shadow; its model id."""

    def compare(self, champion_id: str, challenger_id: str, bars: OHLCV, holdout: int) -> dict[str, Any]:
        """The champion-vs-challenger gate scored on the last ``holdout`` of ``bars`` (the bars before are warm-up):
        a dict with ``passed`` and ``reason``."""

    def own_gate(self, model_id: str) -> dict[str, Any]:
        """The model's own quality gate as stored (``passed``, ``reason``)."""

    def promote(self, name: str, model_id: str, reason: str) -> None:
        """Promote ``model_id`` through canary to full."""

    def retire(self, model_id: str, reason: str) -> None:
        """Retire ``model_id`` (a rejected challenger)."""

    def rollback(self, name: str, reason: str) -> str | None:
        """Roll ``name`` back to its previous champion; the id now full (None when there was none)."""


_EVENTS_SCHEMA = {"id": int, "schedule_id": str, "symbol": str, "name": str, "step": str, "cause": str,
                  "model_id": str, "champion_id": str, "detail": str, "at": str}


class RetrainStore:
    """``retrain_events``: every step of every firing, in the runs store's SQLite file (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = open_database(self.path)
        self._lock = threading.Lock()
        with self._lock:
            table = self._db.table("retrain_events")
            table.create(_EVENTS_SCHEMA, pk="id", not_null={"symbol", "name", "step", "detail", "at"},
                         if_not_exists=True)
            table.create_index(["name", "step", "cause", "at"], if_not_exists=True)

    def close(self) -> None:
        with self._lock:
            self._db.conn.close()

    def record(self, event: RetrainEvent, schedule_id: str | None = None) -> RetrainEvent:
        """Store ``event`` (stamped now when it has no time) and return it as stored."""
        stamped = event if event.at else RetrainEvent(**{**event.__dict__, "at": _now()})
        with self._lock, self._db.conn:
            self._db.table("retrain_events").insert({
                "schedule_id": schedule_id, "symbol": stamped.symbol, "name": stamped.name, "step": stamped.step,
                "cause": stamped.cause, "model_id": stamped.model_id, "champion_id": stamped.champion_id,
                "detail": json.dumps(stamped.detail, sort_keys=True, default=str), "at": stamped.at})
        return stamped

    def last_trained(self, name: str, cause: str) -> datetime | None:
        """When ``cause`` last started a retraining of ``name`` (a ``trained`` step), or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(at) FROM retrain_events WHERE name = ? AND step = 'trained' AND cause = ?",
                (name, cause)).fetchone()
        return datetime.fromisoformat(row[0]) if row and row[0] else None

    def promoted_by_us(self, model_id: str) -> bool:
        """Whether a firing promoted ``model_id`` (only those are watched for rollback)."""
        with self._lock:
            row = self._db.execute("SELECT 1 FROM retrain_events WHERE model_id = ? AND step = 'promoted' LIMIT 1",
                                   (model_id,)).fetchone()
        return row is not None

    def events(self, name: str | None = None, limit: int = 100) -> list[RetrainEvent]:
        """The latest events (of ``name``), oldest first."""
        where, args = ("WHERE name = ?", [name]) if name else ("", [])
        with self._lock:
            rows = self._db.execute(
                f"SELECT symbol, name, step, cause, model_id, champion_id, detail, at FROM retrain_events {where} "
                "ORDER BY id DESC LIMIT ?", [*args, int(limit)]).fetchall()
        return [RetrainEvent(symbol=r[0], name=r[1], step=r[2], cause=r[3], model_id=r[4], champion_id=r[5],
                             detail=json.loads(r[6]), at=r[7]) for r in reversed(rows)]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def model_name(symbol: str) -> str:
    """The ensemble model name of ``symbol`` (as the server names it by default)."""
    return f"ensemble-{symbol}"


def retrain_symbol(server: RetrainServer, store: RetrainStore, policy: RetrainPolicy, symbol: str, bars: OHLCV, *,
                   schedule_id: str | None = None, now: Callable[[], datetime] = lambda: datetime.now(UTC)
                   ) -> RetrainReport:
    """One firing for one symbol: watch the champion, check the triggers, retrain, gate, promote or reject.

    A server error in a step is recorded as a ``failed`` step (with the error) and ends the firing
    for this symbol; it never raises.
    """
    name = model_name(symbol)
    report = RetrainReport(symbol=symbol, name=name)

    def note(step: Step, **kwargs: Any) -> None:
        # stamped by the firing's own clock, the one its cooldown is judged by (not the wall clock at the write)
        at = now().isoformat(timespec="microseconds")
        report.events.append(store.record(RetrainEvent(symbol=symbol, name=name, step=step, at=at, **kwargs),
                                          schedule_id))

    try:
        for step in _steps(server, store, policy, symbol, name, bars, now):
            note(step[0], **step[1])
    except Exception as exc:  # noqa: BLE001 - any server or data fault ends this symbol's firing, recorded
        note("failed", detail={"error": f"{type(exc).__name__}: {exc}"})
    return report


def _steps(server: RetrainServer, store: RetrainStore, policy: RetrainPolicy, symbol: str, name: str, bars: OHLCV,
           now: Callable[[], datetime]) -> Iterator[tuple[Step, dict[str, Any]]]:
    champion, _ = server.champion(name)
    value, n, judged = (None, 0, False)
    if champion is not None:
        value, n, judged = server.quality(champion, policy.quality_metric)
        yield "checked", {"model_id": champion, "detail": {"metric": policy.quality_metric, "value": value,
                                                          "samples": n, "judged": judged}}
        if (policy.rollback_limit is not None and judged and value is not None
                and policy.past(value, policy.rollback_limit) and store.promoted_by_us(champion)):
            reason = (f"live {policy.quality_metric} {value:.4g} past the rollback limit {policy.rollback_limit:g} "
                      f"over {n} samples")
            restored = server.rollback(name, reason)
            yield "rolled_back", {"model_id": restored, "champion_id": champion, "detail": {"reason": reason}}
            return
    cause, why = _trigger(server, policy, champion, bars, value, judged)
    if cause is None:
        return
    yield "triggered", {"cause": cause, "champion_id": champion, "detail": why}
    last = store.last_trained(name, cause)
    if last is not None and (now() - last).total_seconds() < policy.cooldown_s:
        wait = policy.cooldown_s - (now() - last).total_seconds()
        yield "cooldown", {"cause": cause, "detail": {"last_trained": last.isoformat(), "seconds_left": round(wait)}}
        return
    holdout = min(policy.holdout_bars, len(bars) // 4)
    if holdout < 10:
        raise ValueError(f"{len(bars)} bars leave no holdout of 10 bars for the gate (a quarter at most is held out)")
    train_bars = bars.head(len(bars) - holdout)
    if policy.train_bars is not None:
        train_bars = train_bars.tail(policy.train_bars)
    challenger = server.train(symbol, name, train_bars, trigger=cause, fields=policy.train)
    yield "trained", {"cause": cause, "model_id": challenger, "champion_id": champion,
                      "detail": {"bars": len(train_bars), "holdout": holdout}}
    verdict = (server.compare(champion, challenger, bars, holdout) if champion is not None
               else server.own_gate(challenger))
    yield "gated", {"cause": cause, "model_id": challenger, "champion_id": champion, "detail": verdict}
    reason = str(verdict.get("reason") or "")
    if verdict.get("passed"):
        server.promote(name, challenger, f"{cause}: {reason}")
        yield "promoted", {"cause": cause, "model_id": challenger, "champion_id": champion,
                           "detail": {"reason": reason}}
    else:
        server.retire(challenger, f"rejected by the gate: {reason}")
        yield "rejected", {"cause": cause, "model_id": challenger, "champion_id": champion,
                           "detail": {"reason": reason}}


def _trigger(server: RetrainServer, policy: RetrainPolicy, champion: str | None, bars: OHLCV, value: float | None,
             judged: bool) -> tuple[Cause | None, dict[str, Any]]:
    if champion is None:
        return "schedule", {"reason": "no champion deployed"}
    if policy.on_drift:
        recent = bars.tail(min(policy.drift_bars, len(bars)))
        drifted, summary = server.drift(champion, recent)
        if drifted:
            return "drift", summary
    if policy.quality_limit is not None and judged and value is not None and policy.past(value, policy.quality_limit):
        return "quality", {"metric": policy.quality_metric, "value": value, "limit": policy.quality_limit}
    if policy.always:
        return "schedule", {"reason": "retrain on every firing"}
    return None, {}
