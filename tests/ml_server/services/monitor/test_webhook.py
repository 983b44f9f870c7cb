"""The alerts' webhook against a real HTTP receiver on a loopback port: delivered, retried after failures,
failures counted when it stays down, and never in the way of an evaluation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.services.monitor.alert_store import AlertStore
from quantcrew.ml_server.services.monitor.alerts import Alerts
from quantcrew.ml_server.services.monitor.rules import parse_rules
from quantcrew.ml_server.services.monitor.sources import Catalogue, MetricSpec, Sample, SourceContext
from quantcrew.ml_server.services.monitor.webhook import Webhook


class Receiver:
    """A real HTTP server that fails its first ``fail_first`` POSTs with a 503, then takes them (or sleeps
    ``delay_s`` before answering)."""

    def __init__(self, fail_first: int = 0, delay_s: float = 0.0) -> None:
        self.fail_first = fail_first
        self.delay_s = delay_s
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.attempts += 1
                time.sleep(receiver.delay_s)
                if receiver.attempts <= receiver.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the hook's signature
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _dead_url() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now: connections are refused
    return f"http://127.0.0.1:{port}/hook"


def _counter(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    return 0.0 if value is None else value


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def test_a_notification_is_posted_as_json(metrics: Metrics) -> None:
    with Receiver() as receiver:
        hook = Webhook(receiver.url, retries=0, metrics=metrics)
        assert hook.send({"kind": "fired", "alert": {"alert_id": 7}})
        assert hook.flush(5.0)
        hook.close()
    assert receiver.bodies == [{"kind": "fired", "alert": {"alert_id": 7}}]
    assert metrics.registry.get_sample_value("quantcrew_alert_notifications_total",
                                             {"channel": "webhook", "kind": "fired"}) == 1.0


def test_a_failing_receiver_is_retried_with_backoff_until_it_takes_the_alert(metrics: Metrics) -> None:
    with Receiver(fail_first=2) as receiver:
        hook = Webhook(receiver.url, retries=3, backoff_s=0.05, metrics=metrics)
        started = time.perf_counter()
        hook.send({"kind": "fired"})
        assert hook.flush(5.0)
        elapsed = time.perf_counter() - started
        hook.close()
    assert receiver.attempts == 3 and receiver.bodies == [{"kind": "fired"}]
    assert elapsed >= 0.05 + 0.1  # two waits, the second twice the first
    assert _counter(metrics, "quantcrew_alert_webhook_failures_total") == 2.0
    assert _counter(metrics, "quantcrew_alert_webhook_undelivered_total") == 0.0


def test_a_receiver_that_stays_down_has_its_failures_counted(metrics: Metrics) -> None:
    hook = Webhook(_dead_url(), retries=2, backoff_s=0.01, timeout_s=1.0, metrics=metrics)
    hook.send({"kind": "fired"})
    hook.send({"kind": "resolved"})
    assert hook.flush(10.0)
    hook.close()
    assert _counter(metrics, "quantcrew_alert_webhook_failures_total") == 6.0  # 3 attempts each
    assert _counter(metrics, "quantcrew_alert_webhook_undelivered_total") == 2.0
    assert hook.delivered == 0


@pytest.fixture
def alerts_with_hook(tmp_path: Path, metrics: Metrics) -> Iterator[tuple[Alerts, Receiver]]:
    def always(context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
        return [Sample((("series", str(i)),), 1.0, 1) for i in range(3)]

    catalogue = Catalogue()
    catalogue.register(MetricSpec("test.on", always))
    rules = parse_rules("rules:\n  - {name: on, metric: test.on, comparison: '>', threshold: 0, severity: info}\n",
                        catalogue=catalogue)
    with Receiver(delay_s=0.5) as receiver:  # a slow receiver: half a second a POST
        hook = Webhook(receiver.url, retries=0, metrics=metrics)
        alerts = Alerts(AlertStore(tmp_path / "r.db"), rules, catalogue=catalogue, metrics=metrics, webhook=hook)
        yield alerts, receiver
        alerts.close()


def test_a_slow_receiver_never_blocks_an_evaluation(alerts_with_hook: tuple[Alerts, Receiver]) -> None:
    alerts, receiver = alerts_with_hook
    started = time.perf_counter()
    result = alerts.evaluate()
    assert len(result.changed) == 3
    assert time.perf_counter() - started < 0.5  # three POSTs of 0.5 s each are still under way
    assert alerts.webhook is not None and alerts.webhook.flush(5.0)
    assert sorted(body["alert"]["labels"]["series"] for body in receiver.bodies) == ["0", "1", "2"]
    assert {body["kind"] for body in receiver.bodies} == {"fired"}


def test_alerts_are_recorded_while_the_webhook_is_down(tmp_path: Path, metrics: Metrics) -> None:
    def always(context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
        return [Sample((), 1.0, 1)]

    catalogue = Catalogue()
    catalogue.register(MetricSpec("test.on", always))
    rules = parse_rules("rules:\n  - {name: on, metric: test.on, comparison: '>', threshold: 0, severity: info}\n",
                        catalogue=catalogue)
    hook = Webhook(_dead_url(), retries=1, backoff_s=0.01, timeout_s=1.0, metrics=metrics)
    alerts = Alerts(AlertStore(tmp_path / "r.db"), rules, catalogue=catalogue, metrics=metrics, webhook=hook)
    try:
        (fired,) = alerts.evaluate().changed
        assert alerts.get(fired.alert_id).status == "firing"
        assert hook.flush(5.0)
        assert _counter(metrics, "quantcrew_alert_webhook_failures_total") == 2.0
    finally:
        alerts.close()
