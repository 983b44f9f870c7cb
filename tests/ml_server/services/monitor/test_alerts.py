"""The alert engine over a real alert store: for-duration, deduplication, escalation, auto-resolve, cooldown,
rate limit, raised alerts, and evaluation that skips thin data."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from quantcrew.ml_server.errors import ConflictError, InvalidInputError, NotFoundError
from quantcrew.ml_server.services.monitor.alert_store import AlertStore
from quantcrew.ml_server.services.monitor.alerts import Alerts
from quantcrew.ml_server.services.monitor.rules import parse_rules
from quantcrew.ml_server.services.monitor.sources import Catalogue, MetricSpec, Sample, SourceContext, labels_of


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Gauge:
    """A metric whose series a test sets by hand: ``{labels: (value, n)}``."""

    def __init__(self) -> None:
        self.series: dict[tuple[tuple[str, str], ...], tuple[float | None, int]] = {}

    def set(self, value: float | None, n: int = 100, **labels: str) -> None:
        self.series[labels_of(labels)] = (value, n)

    def drop(self, **labels: str) -> None:
        self.series.pop(labels_of(labels), None)

    def __call__(self, context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
        return [Sample(k, v, n) for k, (v, n) in self.series.items()]


RULES = """\
rules:
  - name: error-rate
    metric: test.gauge
    comparison: ">"
    threshold: 0.5
    severity: info
    for: 60s
    min_samples: 10
    escalate_after: 10m
    cooldown: 5m
  - name: errors-counted
    metric: test.count
    comparison: ">="
    threshold: 1
    severity: warning
"""


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Alerts, Gauge, Gauge, Clock]]:
    gauge, count = Gauge(), Gauge()
    catalogue = Catalogue()
    catalogue.register(MetricSpec("test.gauge", gauge, labels=("model_id",)))
    catalogue.register(MetricSpec("test.count", count, absent_is_zero=True))
    clock = Clock()
    store = AlertStore(tmp_path / "registry.db")
    alerts = Alerts(store, parse_rules(RULES, catalogue=catalogue), catalogue=catalogue, clock=clock,
                    notify_per_minute=1000)
    yield alerts, gauge, count, clock
    alerts.close()


def _events(alerts: Alerts, alert_id: int) -> list[str]:
    return [e.kind for e in alerts.store.events(alert_id)]


def test_a_condition_fires_only_after_holding_for_its_duration(parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, gauge, _, clock = parts
    gauge.set(0.9, model_id="m1")
    first = alerts.evaluate()
    assert first.pending == 1 and first.changed == [] and first.firing == 0
    clock.tick(59)
    assert alerts.evaluate().changed == []
    clock.tick(1)
    fired = alerts.evaluate().changed
    assert [(a.rule, a.status, a.labels, a.count) for a in fired] == [("error-rate", "firing", {"model_id": "m1"}, 1)]
    assert fired[0].first_seen == clock.now - timedelta(seconds=60)


def test_a_condition_that_clears_while_pending_never_fires(parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, gauge, _, clock = parts
    gauge.set(0.9, model_id="m1")
    alerts.evaluate()
    clock.tick(30)
    gauge.set(0.1, model_id="m1")
    alerts.evaluate()
    clock.tick(60)
    gauge.set(0.9, model_id="m1")
    assert alerts.evaluate().changed == []  # the clock restarted: pending again, not firing
    assert alerts.list().alerts == []


def test_repeated_firing_evaluations_make_one_alert_with_a_count(parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, gauge, _, clock = parts
    gauge.set(0.9, model_id="m1")
    gauge.set(0.8, model_id="m2")
    for _ in range(25):
        alerts.evaluate()
        clock.tick(5)
    listed = alerts.list().alerts
    assert sorted((a.labels["model_id"], a.count) for a in listed) == [("m1", 13), ("m2", 13)]
    assert len({a.fingerprint for a in listed}) == 2


def test_too_few_samples_are_not_judged(parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, gauge, _, clock = parts
    gauge.set(0.99, n=9, model_id="m1")
    for _ in range(5):
        result = alerts.evaluate()
        clock.tick(120)
    assert result.pending == 0 and alerts.list().alerts == []
    assert "too few samples" in result.skipped["error-rate"]


def test_an_unacknowledged_alert_escalates_each_period_up_to_critical(
        parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, gauge, _, clock = parts
    gauge.set(0.9, model_id="m1")
    alerts.evaluate()
    clock.tick(60)
    alerts.evaluate()
    path = []
    for _ in range(40):  # 40 minutes, escalate_after 10 minutes
        clock.tick(60)
        for changed in alerts.evaluate().changed:
            path.append(changed.severity)
    assert path == ["warning", "critical"]
    (alert,) = alerts.list().alerts
    assert (alert.severity, alert.initial_severity, alert.escalations) == ("critical", "info", 2)


def test_acknowledging_stops_escalation_and_a_resolved_alert_cannot_be_acknowledged(
        parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, gauge, _, clock = parts
    gauge.set(0.9, model_id="m1")
    alerts.evaluate()
    clock.tick(60)
    (fired,) = alerts.evaluate().changed
    acked = alerts.acknowledge(fired.alert_id, by="ops", note="looking")
    assert acked.status == "acknowledged" and acked.acknowledged_by == "ops"
    for _ in range(30):
        clock.tick(60)
        alerts.evaluate()
    assert alerts.get(fired.alert_id).severity == "info"
    resolved = alerts.resolve(fired.alert_id, by="ops")
    assert (resolved.status, resolved.resolved_by) == ("resolved", "ops")
    with pytest.raises(ConflictError):
        alerts.acknowledge(fired.alert_id)
    assert alerts.resolve(fired.alert_id).resolved_at == resolved.resolved_at  # again: no change
    with pytest.raises(NotFoundError):
        alerts.acknowledge(999)
    assert _events(alerts, fired.alert_id)[-2:] == ["resolved", "notified"]


def test_an_alert_resolves_itself_when_the_condition_clears(parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, gauge, _, clock = parts
    gauge.set(0.9, model_id="m1")
    alerts.evaluate()
    clock.tick(60)
    (fired,) = alerts.evaluate().changed
    clock.tick(60)
    gauge.set(0.2, model_id="m1")
    (resolved,) = alerts.evaluate().changed
    assert (resolved.alert_id, resolved.status, resolved.resolved_by) == (fired.alert_id, "resolved", "auto")
    assert alerts.evaluate().firing == 0


def test_flapping_within_the_cooldown_reopens_the_alert_without_a_new_notification(
        parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, gauge, _, clock = parts
    gauge.set(0.9, model_id="m1")
    alerts.evaluate()
    clock.tick(60)
    (fired,) = alerts.evaluate().changed
    gauge.set(0.2, model_id="m1")
    clock.tick(10)
    alerts.evaluate()  # resolved (notified)
    gauge.set(0.9, model_id="m1")
    clock.tick(10)
    alerts.evaluate()
    clock.tick(60)
    (again,) = alerts.evaluate().changed  # within the 5 minute cooldown of the last notification
    assert again.alert_id == fired.alert_id and again.status == "firing"
    assert _events(alerts, fired.alert_id)[-2:] == ["reopened", "suppressed"]
    gauge.set(0.2, model_id="m1")
    clock.tick(10)
    alerts.evaluate()
    gauge.set(0.9, model_id="m1")
    clock.tick(400)  # past the cooldown: a new alert, notified
    alerts.evaluate()
    clock.tick(60)
    (fresh,) = alerts.evaluate().changed
    assert fresh.alert_id != fired.alert_id
    assert _events(alerts, fresh.alert_id) == ["fired", "notified"]


def test_notifications_past_the_rate_limit_are_recorded_as_suppressed(tmp_path: Path) -> None:
    gauge = Gauge()
    catalogue = Catalogue()
    catalogue.register(MetricSpec("test.gauge", gauge))
    clock = Clock()
    rules = parse_rules("rules:\n  - {name: r, metric: test.gauge, comparison: '>', threshold: 0, severity: info}\n",
                        catalogue=catalogue)
    alerts = Alerts(AlertStore(tmp_path / "r.db"), rules, catalogue=catalogue, clock=clock, notify_per_minute=3)
    try:
        for i in range(5):
            gauge.set(1.0, series=str(i))
        fired = alerts.evaluate().changed
        kinds = [_events(alerts, a.alert_id)[-1] for a in fired]
        assert sorted(kinds) == ["notified"] * 3 + ["suppressed"] * 2
        clock.tick(60)  # the bucket refills
        alerts.raise_alert("manual", message="x")
        assert _events(alerts, alerts.list(rule="manual").alerts[0].alert_id)[-1] == "notified"
    finally:
        alerts.close()


def test_a_count_that_ages_out_resolves_its_alert(parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, _, count, clock = parts
    count.set(2.0, n=2, client="a")
    (fired,) = alerts.evaluate().changed
    assert fired.rule == "errors-counted" and fired.severity == "warning"
    count.drop(client="a")
    clock.tick(1)
    (resolved,) = alerts.evaluate().changed
    assert resolved.status == "resolved" and resolved.value == 0.0


def test_raise_alert_deduplicates_by_name_and_labels(parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, _, _, _ = parts
    one = alerts.raise_alert("rolled-back", severity="critical", message="v3 rolled back", labels={"name": "ens"})
    two = alerts.raise_alert("rolled-back", severity="critical", message="v3 rolled back", labels={"name": "ens"})
    other = alerts.raise_alert("rolled-back", severity="critical", labels={"name": "other"})
    assert one.alert_id == two.alert_id != other.alert_id and two.count == 2
    assert alerts.evaluate().firing == 2  # no rule clears a raised alert
    with pytest.raises(ValueError, match="severity"):
        alerts.raise_alert("x", severity="dire")


def test_open_alerts_survive_a_restart(tmp_path: Path, parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, gauge, _, clock = parts
    gauge.set(0.9, model_id="m1")
    alerts.evaluate()
    clock.tick(60)
    (fired,) = alerts.evaluate().changed
    again = Alerts(AlertStore(alerts.store.db_path), alerts.rules, catalogue=alerts.catalogue, clock=clock)
    try:
        clock.tick(5)
        assert again.evaluate().changed == []
        assert again.get(fired.alert_id).count == 2
    finally:
        again.close()


def test_evaluating_an_unknown_rule_is_refused_by_name(parts: tuple[Alerts, Gauge, Gauge, Clock]) -> None:
    alerts, gauge, _, _ = parts
    with pytest.raises(InvalidInputError, match="no alert rule named 'nope'"):
        alerts.evaluate(rules=["nope"])
    assert alerts.evaluate(rules=["errors-counted"]).rules == 1


def test_a_metric_that_raises_skips_its_rule_only(tmp_path: Path) -> None:
    def broken(context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
        raise RuntimeError("store closed")

    gauge = Gauge()
    catalogue = Catalogue()
    catalogue.register(MetricSpec("test.broken", broken))
    catalogue.register(MetricSpec("test.gauge", gauge))
    rules = parse_rules("rules:\n  - {name: a, metric: test.broken, comparison: '>', threshold: 0, severity: info}\n"
                        "  - {name: b, metric: test.gauge, comparison: '>', threshold: 0, severity: info}\n",
                        catalogue=catalogue)
    alerts = Alerts(AlertStore(tmp_path / "r.db"), rules, catalogue=catalogue)
    try:
        gauge.set(1.0)
        result = alerts.evaluate()
        assert "store closed" in result.skipped["a"] and [a.rule for a in result.changed] == ["b"]
    finally:
        alerts.close()


def test_two_engines_on_one_file_fire_once_and_never_write_back_a_stale_alert(tmp_path: Path) -> None:
    # two server processes sharing a home: each runs its own engine over the same alert tables
    gauge = Gauge()
    catalogue = Catalogue()
    catalogue.register(MetricSpec("test.gauge", gauge, labels=("model_id",)))
    catalogue.register(MetricSpec("test.count", Gauge(), absent_is_zero=True))
    clock = Clock()
    engines = [Alerts(AlertStore(tmp_path / "registry.db"), parse_rules(RULES, catalogue=catalogue),
                      catalogue=catalogue, clock=clock, notify_per_minute=1000) for _ in range(2)]
    a, b = engines
    try:
        gauge.set(0.9, model_id="m1")
        a.evaluate(), b.evaluate()
        clock.tick(61)
        fired = a.evaluate().changed
        assert [x.status for x in fired] == ["firing"]
        assert b.evaluate().changed == []  # B sees A's alert: it counts it, never fires a second one
        assert [x.alert_id for x in b.list().alerts] == [fired[0].alert_id]
        b.acknowledge(fired[0].alert_id, by="ops")
        clock.tick(60)
        a.evaluate()  # A's copy was firing: it must not write 'firing' back over B's acknowledgement
        seen = a.get(fired[0].alert_id)
        assert seen.status == "acknowledged" and seen.acknowledged_by == "ops" and seen.count == 3
        a.resolve(fired[0].alert_id, by="ops")
        assert b.get(fired[0].alert_id).status == "resolved"
        with pytest.raises(ConflictError):
            b.acknowledge(fired[0].alert_id)
    finally:
        for engine in engines:
            engine.close()
