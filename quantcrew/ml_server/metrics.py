"""Prometheus metrics, one registry per app (so several apps can live in one test process)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware"]

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
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

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
                            self.metrics.latency.labels(method, template))
                self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)


def _template(scope: Scope) -> str:
    """The matched route's full path template (ids would explode label cardinality).

    FastAPI (>= 0.16x) includes routers lazily: ``scope["route"].path`` is then the path
    inside the included router, and the full template sits in FastAPI's route context.
    """
    context = scope.get("fastapi", {}).get("effective_route_context")
    template = getattr(context, "path", None) or getattr(scope.get("route"), "path", None)
    return str(template) if template else "unmatched"
