"""Prometheus metrics, one registry per app (so several apps can live in one test process)."""

from __future__ import annotations

import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]

RECENT_LATENCIES = 4096
"""Latencies kept per route for the alert rules' rolling percentiles (the newest push the oldest out)."""

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's counters and histograms."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "quantcrew_http_requests_total", "HTTP requests by route and status",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "quantcrew_http_request_seconds", "HTTP request latency by route",
            ["method", "route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.fits = Counter(
            "quantcrew_model_fits_total", "Model fits by family, method used and fallback",
            ["family", "method", "fallback"], registry=self.registry,
        )
        self.models = Gauge("quantcrew_registry_models", "Models in the registry", registry=self.registry)
        self.batch_size = Histogram(
            "quantcrew_inference_batch_size", "Rows per batched forward pass, by model", ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), registry=self.registry,
        )
        self.batch_wait = Histogram(
            "quantcrew_inference_batch_wait_seconds", "Time a request waited in the batch queue", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.predictions_logged = Counter(
            "quantcrew_predictions_logged_total", "Predictions written to the prediction log",
            registry=self.registry,
        )
        self.predictions_dropped = Counter(
            "quantcrew_predictions_dropped_total", "Predictions dropped because the log's queue was full",
            registry=self.registry,
        )
        self.prediction_log_write = Histogram(
            "quantcrew_prediction_log_write_seconds", "Seconds one batch of the prediction log took to write",
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )

        # alerts (the monitor family's rule engine and its channels)
        self.alert_evaluations = Counter(
            "quantcrew_alert_evaluations_total", "Evaluations of the alert rules", registry=self.registry,
        )
        self.alerts_firing = Gauge(
            "quantcrew_alerts_firing", "Alerts firing or acknowledged, by severity", ["severity"],
            registry=self.registry,
        )
        for severity in ("info", "warning", "critical"):
            self.alerts_firing.labels(severity).set(0)
        self.alert_rule_firing = Gauge(
            "quantcrew_alert_rule_firing", "Alerts firing or acknowledged, by rule (0 for a rule with none)",
            ["rule"], registry=self.registry,
        )
        self.alert_notifications = Counter(
            "quantcrew_alert_notifications_total", "Alert notifications sent, by channel and kind; kind "
            "'suppressed' counts those held back by the rate limit", ["channel", "kind"], registry=self.registry,
        )
        self.webhook_failures = Counter(
            "quantcrew_alert_webhook_failures_total", "Webhook delivery attempts that failed (each retry counts)",
            registry=self.registry,
        )
        self.webhook_undelivered = Counter(
            "quantcrew_alert_webhook_undelivered_total", "Alerts the webhook never took: retries spent, or the "
            "queue full", registry=self.registry,
        )
        self.client_events = Counter(
            "quantcrew_client_events_total", "Events reported by clients (circuit-breaker openings), by kind",
            ["kind"], registry=self.registry,
        )
        # drift (the monitor family): the latest report per model, max PSI and min KS p-value over its series
        self.drift_psi_max = Gauge(
            "quantcrew_drift_psi_max", "Largest PSI over a model's features and output in its latest drift report",
            ["model_id"], registry=self.registry,
        )
        self.drift_ks_pvalue_min = Gauge(
            "quantcrew_drift_ks_pvalue_min", "Smallest KS p-value over a model's features and output in its latest "
            "drift report", ["model_id"], registry=self.registry,
        )
        self.drift_detected = Gauge(
            "quantcrew_drift_detected", "1 when a model's latest drift report found drift, else 0", ["model_id"],
            registry=self.registry,
        )
        self.bar_quality_score = Gauge(
            "quantcrew_bar_quality_score", "Data-quality score of the latest bars sent for a model's drift",
            ["model_id"], registry=self.registry,
        )
        # the last requests' latencies per (method, route template): the alert rules' p95 over a window
        self._recent: dict[tuple[str, str], deque[tuple[float, float]]] = {}

    def recent_window(self, method: str, route: str) -> deque[tuple[float, float]]:
        """The rolling window of ``(perf_counter at the end, seconds)`` of one route's latest requests."""
        window = self._recent.get((method, route))
        if window is None:
            window = self._recent.setdefault((method, route), deque(maxlen=RECENT_LATENCIES))
        return window

    def recent_latencies(self, since: float) -> dict[tuple[str, str], list[float]]:
        """Latencies in seconds per (method, route) of the requests that ended at or after ``since``
        (``time.perf_counter`` time), at most :data:`RECENT_LATENCIES` per route."""
        out: dict[tuple[str, str], list[float]] = {}
        for key, window in list(self._recent.items()):
            for _ in range(5):  # a request appending meanwhile (on the event loop) aborts a copy: take it again
                try:
                    rows = list(window)
                    break
                except RuntimeError:
                    continue
            else:
                rows = []
            out[key] = [seconds for ended, seconds in rows if ended >= since]
        return out

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Times every HTTP request; labels by route template so ids do not explode cardinality.

    The labelled children are kept per (method, template, status): ``labels()`` validates and
    looks its arguments up under a lock on every call, a cost paid once per label set here.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram, deque[tuple[float, float]]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            key = (scope.get("method", ""), _template(scope), status)
            children = self._children.get(key)
            if children is None:
                method, template, _ = key
                children = (self.metrics.requests.labels(method, template, str(status)),
                            self.metrics.latency.labels(method, template),
                            self.metrics.recent_window(method, template))
                self._children[key] = children
            end = time.perf_counter()
            children[0].inc()
            children[1].observe(end - start)
            children[2].append((end, end - start))


def _template(scope: Scope) -> str:
    """The matched route's full path template (ids would explode label cardinality).

    FastAPI (>= 0.16x) includes routers lazily: ``scope["route"].path`` is then the path
    inside the included router, and the full template sits in FastAPI's route context.
    """
    context = scope.get("fastapi", {}).get("effective_route_context")
    template = getattr(context, "path", None) or getattr(scope.get("route"), "path", None)
    return str(template) if template else "unmatched"
