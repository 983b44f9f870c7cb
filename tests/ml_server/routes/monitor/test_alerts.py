"""Alerts through the real app: rules over real sources (route latency, failed jobs, breaker trips reported by
clients), evaluation on demand and in the background, acknowledge and resolve, bad input, and an app that will
not start on a bad rule file."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app
from quantcrew.ml_server.jobs.context import JobContext
from quantcrew.ml_server.services.monitor.rules import RuleFileError

RULES = """\
rules:
  - name: health-slow
    metric: latency.p95_ms
    comparison: ">="
    threshold: 0
    window: 5m
    min_samples: 5
    labels: {route: /health}
    severity: info
  - name: jobs-failing
    metric: jobs.failed
    comparison: ">="
    threshold: 1
    severity: warning
  - name: breaker
    metric: breaker.trips
    comparison: ">="
    threshold: 2
    window: 10m
    severity: critical
"""


@pytest.fixture
def app_client(settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings.monitor.alert_rules = rules
    with TestClient(create_app(settings)) as tc:
        yield tc


def _evaluate(client: TestClient, **body: Any) -> dict[str, Any]:
    reply = client.post("/v1/monitor/alerts/evaluate", json=body or None)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def _fired(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["rule"]: a for a in result["changed"] if a["status"] == "firing"}


def test_a_rule_on_route_latency_fires_once_the_route_has_enough_samples(app_client: TestClient) -> None:
    for _ in range(4):
        app_client.get("/health")
    assert "too few samples" in _evaluate(app_client, rules=["health-slow"])["skipped"]["health-slow"]
    app_client.get("/health")
    fired = _fired(_evaluate(app_client, rules=["health-slow"]))["health-slow"]
    assert fired["labels"] == {"method": "GET", "route": "/health"} and fired["samples"] == 5
    assert fired["value"] > 0


def test_a_failed_job_fires_the_jobs_rule(app_client: TestClient) -> None:
    def boom(ctx: JobContext) -> dict[str, Any]:
        raise RuntimeError("the data ran out")

    jobs = app_client.app.state.jobs  # type: ignore[attr-defined]
    info = jobs.submit("test_boom", boom, params={})
    assert jobs.wait(info.job_id, timeout_s=10).status == "failed"
    fired = _fired(_evaluate(app_client, rules=["jobs-failing"]))["jobs-failing"]
    assert fired["labels"] == {"kind": "test_boom"} and fired["value"] == 1.0


def test_breaker_trips_reported_by_clients_fire_per_client_and_count_once_per_event(
        app_client: TestClient) -> None:
    event = {"kind": "breaker_open", "client": "crew-1", "server": "http://ml:8765", "failures": 3,
             "event_id": "e-1"}
    assert app_client.post("/v1/monitor/events", json=event).json() == {"event_id": "e-1", "duplicate": False}
    assert app_client.post("/v1/monitor/events", json=event).json()["duplicate"] is True
    assert _evaluate(app_client, rules=["breaker"])["changed"] == []  # one trip, the rule wants two
    app_client.post("/v1/monitor/events", json={**event, "event_id": "e-2"})
    app_client.post("/v1/monitor/events", json={**event, "client": "crew-2", "event_id": "e-3"})
    fired = _fired(_evaluate(app_client, rules=["breaker"]))["breaker"]
    assert fired["labels"] == {"client": "crew-1", "server": "http://ml:8765"} and fired["severity"] == "critical"
    metrics = app_client.get("/metrics").text
    assert 'quantcrew_client_events_total{kind="breaker_open"} 3.0' in metrics
    assert 'quantcrew_alerts_firing{severity="critical"} 1.0' in metrics


def test_ack_and_resolve_through_the_api(app_client: TestClient) -> None:
    for i in range(2):
        app_client.post("/v1/monitor/events", json={"kind": "breaker_open", "client": "c", "event_id": f"x{i}"})
    alert_id = _fired(_evaluate(app_client))["breaker"]["alert_id"]
    _evaluate(app_client)
    listed = app_client.get("/v1/monitor/alerts", params={"status": "firing"}).json()["alerts"]
    assert [(a["alert_id"], a["count"]) for a in listed if a["rule"] == "breaker"] == [(alert_id, 2)]

    acked = app_client.post(f"/v1/monitor/alerts/{alert_id}/ack", json={"by": "ops", "note": "on it"})
    assert acked.status_code == 200 and acked.json()["status"] == "acknowledged"
    resolved = app_client.post(f"/v1/monitor/alerts/{alert_id}/resolve")  # no body: allowed
    assert resolved.json()["status"] == "resolved" and resolved.json()["resolved_by"] == "api"
    history = [e["kind"] for e in app_client.get(f"/v1/monitor/alerts/{alert_id}").json()["events"]]
    assert history[:3] == ["fired", "notified", "acknowledged"] and "resolved" in history
    assert app_client.post(f"/v1/monitor/alerts/{alert_id}/ack").status_code == 409
    assert app_client.get("/v1/monitor/alerts", params={"status": "resolved"}).json()["alerts"][0]["alert_id"] \
        == alert_id


@pytest.mark.parametrize(("method", "path", "body", "status", "field"), [
    ("post", "/v1/monitor/alerts/424242/ack", None, 404, None),
    ("post", "/v1/monitor/alerts/424242/resolve", None, 404, None),
    ("get", "/v1/monitor/alerts/424242", None, 404, None),
    ("post", "/v1/monitor/alerts/abc/ack", None, 422, "alert_id"),
    ("post", "/v1/monitor/alerts/0/resolve", None, 422, "alert_id"),
    ("post", "/v1/monitor/alerts/1/ack", {"by": "x" * 201}, 422, "by"),
    ("get", "/v1/monitor/alerts?status=burning", None, 422, "status"),
    ("post", "/v1/monitor/alerts/evaluate", {"rules": ["nope"]}, 422, "rules"),
    ("post", "/v1/monitor/events", {"kind": "meltdown", "client": "c"}, 422, "kind"),
    ("post", "/v1/monitor/events", {"kind": "breaker_open"}, 422, "client"),
    ("post", "/v1/monitor/events", {"kind": "breaker_open", "client": "c", "failures": -1}, 422, "failures"),
])
def test_bad_input_is_a_4xx_naming_the_field(app_client: TestClient, method: str, path: str,
                                             body: dict[str, Any] | None, status: int, field: str | None) -> None:
    reply = getattr(app_client, method)(path, json=body) if body is not None else getattr(app_client, method)(path)
    assert reply.status_code == status, reply.text
    if field is not None:
        assert field in reply.text


def test_the_background_loop_evaluates_on_its_interval(settings: Settings, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings.monitor.alert_rules = rules
    settings.monitor.alert_interval_s = 0.05
    with TestClient(create_app(settings)) as client:
        for i in range(2):
            client.post("/v1/monitor/events", json={"kind": "breaker_open", "client": "c", "event_id": f"b{i}"})
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not client.get("/v1/monitor/alerts").json()["alerts"]:
            time.sleep(0.05)
        (alert,) = client.get("/v1/monitor/alerts").json()["alerts"]
        assert alert["rule"] == "breaker"


@pytest.mark.parametrize(("text", "line", "words"), [
    ("rules:\n  - name: a\n    metric: nonsense.metric\n    comparison: '>'\n    threshold: 1\n    severity: info\n",
     3, "unknown metric"),
    ("rules:\n  - name: a\n    metric: jobs.failed\n    severity: info\n", 2, "missing the field 'comparison'"),
    ("rules:\n  - name: a\n   metric: : :\n", 3, "not valid YAML"),
])
def test_the_app_refuses_to_start_on_a_bad_rule_file(settings: Settings, tmp_path: Path, text: str, line: int,
                                                     words: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    settings.monitor.alert_rules = path
    with pytest.raises(RuleFileError) as caught:
        create_app(settings)
    assert str(caught.value).startswith(f"{path}:{line}:") and words in str(caught.value)



def test_an_event_time_out_of_range_is_a_422_naming_it(app_client: TestClient) -> None:
    for at in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        reply = app_client.post("/v1/monitor/events", json={"kind": "breaker_open", "client": "c", "at": at})
        assert reply.status_code == 422 and "at" in reply.json()["error"]["details"][0]["loc"]
    naive = app_client.post("/v1/monitor/events", json={"kind": "breaker_open", "client": "c",
                                                        "at": "2026-01-05T09:00:00"})
    assert naive.status_code == 202


def test_the_app_posts_its_notifications_to_the_configured_webhook(settings: Settings, tmp_path: Path) -> None:
    from tests.ml_server.services.monitor.test_webhook import Receiver

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings.monitor.alert_rules = rules
    with Receiver() as receiver:
        settings.monitor.webhook_url = receiver.url
        with TestClient(create_app(settings)) as client:
            for i in range(2):
                client.post("/v1/monitor/events", json={"kind": "breaker_open", "client": "c", "event_id": f"w{i}"})
            alert_id = _fired(_evaluate(client, rules=["breaker"]))["breaker"]["alert_id"]
            client.post(f"/v1/monitor/alerts/{alert_id}/resolve", json={"by": "ops"})
            webhook = client.app.state.alerts.webhook  # type: ignore[attr-defined]
            assert webhook.flush(5.0)
    assert [(b["kind"], b["alert"]["alert_id"]) for b in receiver.bodies] == [("fired", alert_id),
                                                                            ("resolved", alert_id)]
    assert receiver.bodies[1]["alert"]["resolved_by"] == "ops"
