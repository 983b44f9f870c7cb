"""The alert engine: evaluates the rules over the metric catalogue, keeps one alert per fingerprint, notifies.

Each evaluation reads every rule's metric (:mod:`.sources`) and judges each labelled series with enough samples
(a series below the rule's ``min_samples`` is not judged, so nothing fires on too little data):

* the condition holds: the series is *pending* until it has held for the rule's ``for``, then the alert
  *fires*; while it keeps holding, the same alert row counts the evaluations (``count``, first and last seen):
  the fingerprint (rule and labels) deduplicates;
* the condition clears: a pending series is forgotten and a firing or acknowledged alert is resolved
  (``resolved_by = "auto"``);
* an alert firing unacknowledged for the rule's ``escalate_after`` moves one severity up (info, warning,
  critical), and again after each further ``escalate_after``; acknowledging it stops that.

Notifications (fired, escalated, resolved) go to the log, the ``alert_events`` table and the webhook. They are
rate limited (``monitor.alert_notify_per_minute`` over all alerts; the rest are recorded as ``suppressed``), and
a fingerprint firing again within its rule's ``cooldown`` of its last notification is not notified again (an
alert resolved automatically within the cooldown is reopened rather than duplicated).

:meth:`Alerts.raise_alert` raises an alert directly (the retraining pipeline's "rolled back"); such an alert has
no rule to clear it and stays until it is resolved.

Several server processes may share the alert tables (replicas on a shared home, each with its own engine and
loop). The open alerts kept in memory are therefore read again from the table inside each write transaction
(``BEGIN IMMEDIATE``, one writer at a time across processes) and before each read: an alert fired, acknowledged
or resolved by one replica is seen by the others, never fired twice nor written back over with a stale copy.
What stays per process: the pending series (each replica's own ``for`` clock), the notification rate limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from quantcrew.ml_server.errors import ConflictError, InvalidInputError, NotFoundError
from quantcrew.ml_server.schemas.alerts import (
    AlertEvaluation,
    AlertInfo,
    AlertList,
    MonitorEventAccepted,
    MonitorEventRequest,
)
from quantcrew.ml_server.services.monitor.alert_store import AlertRow, AlertStore
from quantcrew.ml_server.services.monitor.rules import SEVERITIES, Rule
from quantcrew.ml_server.services.monitor.sources import CATALOGUE, Catalogue, Labels, Sample, SourceContext, labels_of

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings
    from quantcrew.ml_server.metrics import Metrics
    from quantcrew.ml_server.services.monitor.webhook import Webhook

__all__ = ["Alerts", "fingerprint", "open_alerts"]

logger = logging.getLogger("quantcrew.ml_server.monitor")

_LOG_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


def fingerprint(rule: str, labels: Labels) -> str:
    """The alert's identity: its rule and the labels of its series, hashed (16 hex characters)."""
    return hashlib.sha256(json.dumps([rule, list(labels)]).encode()).hexdigest()[:16]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class _Bucket:
    """A token bucket: ``per_minute`` notifications a minute on average, bursts up to ``per_minute``."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.tokens = float(per_minute)
        self.at: datetime | None = None

    def take(self, now: datetime) -> bool:
        if self.at is not None:
            self.tokens = min(self.capacity, self.tokens + (now - self.at).total_seconds() * self.capacity / 60.0)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Alerts:
    """The rules, their open alerts and the channels.

    Args:
        store: The alert tables.
        rules: The checked rules (:func:`~quantcrew.ml_server.services.monitor.rules.load_rules`).
        context: What the metric providers read.
        catalogue: The metrics (default the server's).
        metrics: Prometheus metrics to update (None: none).
        webhook: Where notifications are POSTed (None: no webhook).
        notify_per_minute: Rate limit of notifications over all alerts.
        clock: The time now (UTC); tests and benches pass their own.
    """

    def __init__(self, store: AlertStore, rules: list[Rule], *, context: SourceContext | None = None,
                 catalogue: Catalogue = CATALOGUE, metrics: Metrics | None = None, webhook: Webhook | None = None,
                 notify_per_minute: int = 30, clock: Callable[[], datetime] = _utcnow) -> None:
        self.store = store
        self.rules = list(rules)
        self.context = context or SourceContext()
        self.catalogue = catalogue
        self.metrics = metrics
        self.webhook = webhook
        self.clock = clock
        self._bucket = _Bucket(notify_per_minute)
        self._lock = threading.RLock()
        self._open: dict[str, AlertRow] = {row.fingerprint: row for row in store.open_alerts()}
        self._pending: dict[str, tuple[str, datetime]] = {}  # fingerprint -> (rule, holding since)
        self._rules = {rule.name: rule for rule in self.rules}
        self._gauged: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._update_gauge()

    # -- evaluating ------------------------------------------------------------------------------------------

    def evaluate(self, rules: list[str] | None = None) -> AlertEvaluation:
        """Evaluate every rule (or those named in ``rules``) once; returns what changed.

        Raises:
            InvalidInputError: a name in ``rules`` is no rule (422).
        """
        started = time.perf_counter()
        chosen = self.rules
        if rules is not None:
            unknown = [name for name in rules if name not in self._rules]
            if unknown:
                raise InvalidInputError(f"no alert rule named {unknown[0]!r}; rules: {', '.join(self._rules)}",
                                        details=[{"loc": ["body", "rules"], "msg": "unknown rule",
                                                  "input": unknown[0]}])
            chosen = [self._rules[name] for name in dict.fromkeys(rules)]
        with self._lock:
            now = self.clock()
            changed: dict[int, AlertRow] = {}
            skipped: dict[str, str] = {}
            judged = 0
            with self.store.transaction():
                self._sync()
                for rule in chosen:
                    n, why = self._evaluate_rule(rule, now, changed)
                    judged += n
                    if why is not None:
                        skipped[rule.name] = why
            if self.metrics is not None:
                self.metrics.alert_evaluations.inc()
            self._update_gauge()
            return AlertEvaluation(
                at=now, rules=len(chosen), series=judged, skipped=skipped, pending=len(self._pending),
                changed=[row.info() for row in changed.values()], firing=len(self._open),
                elapsed_ms=(time.perf_counter() - started) * 1000.0)

    def _evaluate_rule(self, rule: Rule, now: datetime, changed: dict[int, AlertRow]) -> tuple[int, str | None]:
        spec = self.catalogue.get(rule.metric)
        if spec is None:  # a family unregistered its metric since the rules were checked
            return 0, f"metric {rule.metric} is not in the catalogue"
        try:
            samples = self.catalogue.read(rule.metric, self.context, rule.window, dict(rule.selector))
        except Exception as exc:  # noqa: BLE001 - one metric failing must not stop the other rules
            logger.warning("alert rule %s: reading %s failed: %s", rule.name, rule.metric, exc)
            return 0, f"reading {rule.metric} failed: {type(exc).__name__}: {exc}"
        seen: set[str] = set()
        judged, short = 0, 0
        for sample in samples:
            fp = fingerprint(rule.name, sample.labels)
            seen.add(fp)
            if sample.value is None or not math.isfinite(sample.value) or sample.n < rule.min_samples:
                short += 1
                continue
            judged += 1
            self._judge(rule, fp, sample, now, changed)
        if spec.absent_is_zero:  # a count whose events aged out reads 0: its alert can clear
            for fp, row in list(self._open.items()):
                if row.rule == rule.name and fp not in seen:
                    judged += 1
                    self._judge(rule, fp, Sample(row.labels, 0.0, rule.min_samples), now, changed)
            for fp, (name, _) in list(self._pending.items()):
                if name == rule.name and fp not in seen:
                    del self._pending[fp]
        if judged:
            return judged, None
        if short:
            return 0, f"too few samples (fewer than {rule.min_samples}) in {short} series"
        return 0, "no data"

    def _judge(self, rule: Rule, fp: str, sample: Sample, now: datetime, changed: dict[int, AlertRow]) -> None:
        value = float(sample.value) if sample.value is not None else 0.0
        row = self._open.get(fp)
        if not rule.holds(value):
            self._pending.pop(fp, None)
            if row is not None:
                row.value, row.samples = value, sample.n
                self._close(row, now, by="auto", note=f"{rule.metric} = {value:.6g} no longer "
                                                       f"{rule.comparison} {rule.threshold:g}")
                changed[row.alert_id] = row
            return
        if row is not None:
            self._pending.pop(fp, None)  # fired by another replica meanwhile
            row.count += 1
            row.last_seen, row.value, row.samples = now, value, sample.n
            if self._escalates(rule, row, now):
                self._escalate(row, now)
                changed[row.alert_id] = row
            else:
                self.store.touch(row)
            return
        since = self._pending.setdefault(fp, (rule.name, now))[1]
        if (now - since).total_seconds() >= rule.for_s:
            del self._pending[fp]
            row = self._fire(rule, fp, sample.labels, value, sample.n, since, now)
            changed[row.alert_id] = row

    @staticmethod
    def _escalates(rule: Rule, row: AlertRow, now: datetime) -> bool:
        if rule.escalate_after_s is None or row.status != "firing" or row.severity == SEVERITIES[-1]:
            return False
        return (now - (row.escalated_at or row.fired_at)).total_seconds() >= rule.escalate_after_s

    def _message(self, rule: Rule, labels: Labels, value: float) -> str:
        where = ", ".join(f"{k}={v}" for k, v in labels)
        text = f"{rule.metric}{'{' + where + '}' if where else ''} = {value:.6g} {rule.comparison} {rule.threshold:g}"
        return f"{rule.description} ({text})" if rule.description else text

    def _fire(self, rule: Rule, fp: str, labels: Labels, value: float, n: int, since: datetime,
              now: datetime) -> AlertRow:
        previous = self.store.last_resolved(fp)
        quiet = (previous is not None and previous.notified_at is not None
                 and (now - previous.notified_at).total_seconds() < rule.cooldown_s)
        if quiet and previous is not None and previous.resolved_by == "auto":
            row = previous  # flapping within the cooldown: the same alert again
            row.status, row.resolved_at, row.resolved_by = "firing", None, None
            row.count += 1
            row.last_seen, row.value, row.samples = now, value, n
            self.store.save(row)
            self.store.event(row.alert_id, now, "reopened", {"value": value})
        else:
            row = AlertRow(fingerprint=fp, rule=rule.name, metric=rule.metric, labels=labels, status="firing",
                           severity=rule.severity, initial_severity=rule.severity, comparison=rule.comparison,
                           threshold=rule.threshold, value=value, samples=n, count=1, first_seen=since,
                           last_seen=now, fired_at=now, message=self._message(rule, labels, value))
            self.store.save(row)
            self.store.event(row.alert_id, now, "fired", {"value": value, "samples": n})
        self._open[fp] = row
        if quiet:
            self.store.event(row.alert_id, now, "suppressed", {"reason": "cooldown", "kind": "fired"})
            self._count("all", "suppressed")
        else:
            self._notify(row, "fired", now)
        return row

    def _escalate(self, row: AlertRow, now: datetime) -> None:
        before = row.severity
        row.severity = SEVERITIES[min(len(SEVERITIES) - 1, SEVERITIES.index(before) + 1)]
        row.escalations += 1
        row.escalated_at = now
        self.store.save(row)
        self.store.event(row.alert_id, now, "escalated", {"from": before, "to": row.severity})
        self._notify(row, "escalated", now)

    def _close(self, row: AlertRow, now: datetime, *, by: str, note: str | None) -> None:
        row.status, row.resolved_at, row.resolved_by = "resolved", now, by
        self._open.pop(row.fingerprint, None)
        self.store.save(row)
        self.store.event(row.alert_id, now, "resolved", {"by": by, "note": note})
        self._notify(row, "resolved", now)

    # -- notifying -------------------------------------------------------------------------------------------

    def _notify(self, row: AlertRow, kind: str, now: datetime) -> None:
        if not self._bucket.take(now):
            self.store.event(row.alert_id, now, "suppressed", {"reason": "rate limit", "kind": kind})
            self._count("all", "suppressed")
            logger.debug("alert %d %s: notification suppressed by the rate limit", row.alert_id, kind)
            return
        row.notified_at = now
        self.store.save(row)
        level = logging.INFO if kind == "resolved" else _LOG_LEVEL.get(row.severity, logging.WARNING)
        logger.log(level, "alert %d %s [%s] %s: %s (count %d)", row.alert_id, kind, row.severity, row.rule,
                   row.message, row.count)
        self._count("log", kind)
        self.store.event(row.alert_id, now, "notified", {"kind": kind, "severity": row.severity})
        if self.webhook is not None:
            self.webhook.send({"kind": kind, "alert": row.info().model_dump(mode="json")})

    def _count(self, channel: str, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.alert_notifications.labels(channel, kind).inc()

    def _update_gauge(self) -> None:
        if self.metrics is None:
            return
        counts = dict.fromkeys(SEVERITIES, 0)
        for row in self._open.values():
            counts[row.severity] = counts.get(row.severity, 0) + 1
        for severity, n in counts.items():
            self.metrics.alerts_firing.labels(severity).set(n)
        by_rule = dict.fromkeys([*self._rules, *self._gauged], 0)  # a raised alert's rule drops back to 0
        for row in self._open.values():
            by_rule[row.rule] = by_rule.get(row.rule, 0) + 1
        for rule, n in by_rule.items():
            self.metrics.alert_rule_firing.labels(rule).set(n)
        self._gauged = set(by_rule)

    # -- raising, acknowledging, resolving -------------------------------------------------------------------

    def raise_alert(self, name: str, *, severity: str = "warning", message: str = "",
                    labels: Mapping[str, Any] | None = None, value: float | None = None,
                    metric: str = "raised") -> AlertInfo:
        """Raise an alert from code (no rule): one alert per ``name`` and ``labels`` while it is open, its count
        going up on each raise; it stays until resolved through the API.

        Raises:
            ValueError: an unknown severity, or a value that is not finite.
        """
        if severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        if value is not None and not math.isfinite(value):
            raise ValueError(f"value must be a finite number or None, got {value!r}")
        key = labels_of(labels or {})
        fp = fingerprint(name, key)
        with self._lock:
            now = self.clock()
            with self.store.transaction():
                self._sync()
                row = self._open.get(fp)
                if row is not None:
                    row.count += 1
                    row.last_seen, row.value, row.message = now, value, message or row.message
                    self.store.save(row)
                    self.store.event(row.alert_id, now, "raised", {"value": value})
                else:
                    row = AlertRow(fingerprint=fp, rule=name, metric=metric, labels=key, status="firing",
                                   severity=severity, initial_severity=severity, comparison="", threshold=0.0,
                                   value=value, samples=0, count=1, first_seen=now, last_seen=now, fired_at=now,
                                   message=message)
                    self.store.save(row)
                    self.store.event(row.alert_id, now, "fired", {"value": value, "raised": True})
                    self._open[fp] = row
                    self._notify(row, "fired", now)
            self._update_gauge()
            return row.info()

    def acknowledge(self, alert_id: int, *, by: str | None = None, note: str | None = None) -> AlertInfo:
        """Acknowledge an alert: it stops escalating.

        Raises:
            NotFoundError: no such alert (404).
            ConflictError: it is resolved (409).
        """
        with self._lock, self.store.transaction():
            self._sync()
            row = self._row(alert_id)
            if row.status == "resolved":
                raise ConflictError(f"alert {alert_id} is resolved; there is nothing to acknowledge",
                                    details={"alert_id": alert_id, "status": row.status})
            if row.status == "firing":
                now = self.clock()
                row.status, row.acknowledged_at, row.acknowledged_by = "acknowledged", now, by
                self.store.save(row)
                self.store.event(alert_id, now, "acknowledged", {"by": by, "note": note})
                logger.info("alert %d acknowledged by %s", alert_id, by or "someone")
            return row.info()

    def resolve(self, alert_id: int, *, by: str | None = None, note: str | None = None) -> AlertInfo:
        """Resolve an alert by hand (resolving a resolved one changes nothing).

        Raises:
            NotFoundError: no such alert (404).
        """
        with self._lock:
            with self.store.transaction():
                self._sync()
                row = self._row(alert_id)
                if row.status != "resolved":
                    self._close(row, self.clock(), by=by or "api", note=note)
                    self._pending.pop(row.fingerprint, None)
            self._update_gauge()
            return row.info()

    def _sync(self) -> None:
        """The open alerts as the table has them now (another replica may have changed them); lock held."""
        self._open = {row.fingerprint: row for row in self.store.open_alerts()}

    def _row(self, alert_id: int) -> AlertRow:
        for row in self._open.values():
            if row.alert_id == alert_id:
                return row
        stored = self.store.get(alert_id)
        if stored is None:
            raise NotFoundError(f"no alert with id {alert_id}", details={"alert_id": alert_id})
        return stored

    # -- reading ---------------------------------------------------------------------------------------------

    def get(self, alert_id: int) -> AlertInfo:
        """One alert with its history.

        Raises:
            NotFoundError: no such alert (404).
        """
        with self._lock:
            self._sync()
            return self._row(alert_id).info(events=self.store.events(alert_id))

    def list(self, *, status: str | None = None, severity: str | None = None, rule: str | None = None,
             limit: int = 100) -> AlertList:
        """Alerts newest first."""
        with self._lock:
            self._sync()
            rows = self.store.list(status=status, severity=severity, rule=rule, limit=limit)
            live = {row.alert_id: row for row in self._open.values()}
            return AlertList(alerts=[live.get(row.alert_id, row).info() for row in rows])

    def record_event(self, event: MonitorEventRequest) -> MonitorEventAccepted:
        """Store an event a client reported (counted once per ``event_id``)."""
        at = event.at if event.at is not None else _utcnow()
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        event_id, duplicate = self.store.record_client_event(
            kind=event.kind, client=event.client, server=event.server or "", at=at, event_id=event.event_id,
            failures=event.failures, detail=event.detail)
        if not duplicate:
            if self.metrics is not None:
                self.metrics.client_events.labels(event.kind).inc()
            logger.warning("client %s reports %s on %s (%s faults)", event.client, event.kind,
                           event.server or "this server", event.failures if event.failures is not None else "?")
        return MonitorEventAccepted(event_id=event_id, duplicate=duplicate)

    # -- the background loop ---------------------------------------------------------------------------------

    def start(self, interval_s: float) -> None:
        """Evaluate every ``interval_s`` seconds on a daemon thread (first after one interval)."""
        if self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.evaluate()
                except Exception:  # noqa: BLE001 - the loop outlives one bad evaluation
                    logger.exception("alert evaluation failed")

        self._thread = threading.Thread(target=loop, name="quantcrew-alerts", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the loop (an evaluation under way finishes first), the webhook, and close the store."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.webhook is not None:
            self.webhook.close()
        with self._lock:
            self.store.close()


def open_alerts(state: Any, settings: Settings, rules: list[Rule]) -> Alerts:
    """The app's alert engine (the lifespan's part): its store in the registry's file, the providers reading the
    app's state, the webhook when one is configured, and the evaluation loop started."""
    from quantcrew.ml_server.services.monitor.webhook import Webhook

    monitor = settings.monitor
    store = AlertStore(settings.registry_db)
    metrics = getattr(state, "metrics", None)
    webhook = None
    if monitor.webhook_url:
        webhook = Webhook(monitor.webhook_url, retries=monitor.webhook_retries, backoff_s=monitor.webhook_backoff_s,
                          timeout_s=monitor.webhook_timeout_s, metrics=metrics)
    context = SourceContext(settings=settings, metrics=metrics, jobs=getattr(state, "jobs", None), events=store,
                            state=state)
    alerts = Alerts(store, rules, context=context, metrics=metrics, webhook=webhook,
                    notify_per_minute=monitor.alert_notify_per_minute)
    alerts.start(monitor.alert_interval_s)
    return alerts
