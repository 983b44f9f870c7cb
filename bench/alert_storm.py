"""Alert storm: N firing evaluations of one condition make ONE alert with a count, escalated as configured.

One rule (``storm.value > 0``, severity info, ``for`` 60 s, ``escalate_after`` 1 h, cooldown 10 min) over a metric
that stays above its threshold, evaluated N times (default 10,000) by the real engine into a real SQLite alert
store, with a real webhook to a local HTTP receiver on a loopback port. The engine's clock advances one simulated
second per evaluation, so the storm spans N seconds of simulated time (10,000 s: two escalation periods). Reports
the alerts stored, the one alert's count, its severity path (at which evaluation and simulated time each step
came), the notifications sent (log and webhook) and the evaluation timings.

Run: .venv/bin/python bench/alert_storm.py [--evaluations 10000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from _table import print_table, summary

from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.services.monitor.alert_store import AlertStore
from quantcrew.ml_server.services.monitor.alerts import Alerts
from quantcrew.ml_server.services.monitor.rules import parse_rules
from quantcrew.ml_server.services.monitor.sources import Catalogue, MetricSpec, Sample, SourceContext
from quantcrew.ml_server.services.monitor.webhook import Webhook

RULES = """\
rules:
  - name: storm
    metric: storm.value
    comparison: ">"
    threshold: 0.5
    severity: info
    for: 60s
    escalate_after: 1h
    cooldown: 10m
"""


def _receiver() -> tuple[ThreadingHTTPServer, list[dict[str, Any]]]:
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
            bodies.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the hook's signature
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, bodies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=10_000)
    args = parser.parse_args()

    def storm(context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
        return [Sample((("model_id", "ensemble-spy-v3"),), 0.9, 250)]

    catalogue = Catalogue()
    catalogue.register(MetricSpec("storm.value", storm, labels=("model_id",)))
    now = [datetime(2026, 1, 5, 9, 0, tzinfo=UTC)]
    server, bodies = _receiver()
    metrics = Metrics()
    with tempfile.TemporaryDirectory() as tmp:
        hook = Webhook(f"http://127.0.0.1:{server.server_address[1]}/hook", retries=2, metrics=metrics)
        alerts = Alerts(AlertStore(Path(tmp) / "registry.db"), parse_rules(RULES, catalogue=catalogue),
                        catalogue=catalogue, metrics=metrics, webhook=hook, clock=lambda: now[0])
        timings, path = [], []
        started = time.perf_counter()
        for i in range(args.evaluations + 60):  # the first 60 s are the rule's 'for': pending, not firing
            t0 = time.perf_counter()
            result = alerts.evaluate()
            timings.append((time.perf_counter() - t0) * 1000.0)
            for alert in result.changed:
                path.append((alert.severity, i + 1, (now[0] - datetime(2026, 1, 5, 9, 0, tzinfo=UTC)).total_seconds()))
            now[0] += timedelta(seconds=1)
        wall = time.perf_counter() - started
        hook.flush(10.0)
        stored = alerts.list(limit=1000).alerts
        alert = stored[0]
        events = alerts.store.events(alert.alert_id, limit=100_000)
        alerts.close()
    server.shutdown()

    print(f"Alert storm: {args.evaluations + 60} evaluations ({args.evaluations} firing after the 60 s 'for'), "
          f"one simulated second apart")
    print_table(["alerts stored", "count", "severity now", "escalations", "history rows", "notifications (log)",
                 "webhook POSTs"],
                [[len(stored), alert.count, alert.severity, alert.escalations, len(events),
                  sum(1 for e in events if e.kind == "notified"), len(bodies)]])
    print()
    print_table(["severity", "at evaluation", "simulated s"], [[s, i, f"{t:.0f}"] for s, i, t in path])
    print()
    timing = summary(timings)
    print_table(["evaluations/s", "median ms", "p95 ms", "p99 ms", "wall s"],
                [[len(timings) / wall, timing["median"], timing["p95"], timing["p99"], wall]])


if __name__ == "__main__":
    main()
