"""The FastAPI application factory and its lifespan; nothing else lives here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig

from quantcrew import __version__
from quantcrew.config.settings import Settings, get_settings
from quantcrew.ml_server.batching import BatcherPool
from quantcrew.ml_server.device import resolve_device
from quantcrew.ml_server.families import FAMILIES
from quantcrew.ml_server.handlers import install_error_handlers
from quantcrew.ml_server.jobs import JobManager
from quantcrew.ml_server.limits import BodySizeLimitMiddleware
from quantcrew.ml_server.metrics import Metrics, MetricsMiddleware
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.routes import docs, health, jobs, models
from quantcrew.ml_server.routing import RouteIndex
from quantcrew.ml_server.security import APIKeyMiddleware, require_api_key
from quantcrew.ml_server.services.bandit.store import BanditStore
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.lifecycle import Lifecycle
from quantcrew.ml_server.services.monitor.alerts import open_alerts
from quantcrew.ml_server.services.monitor.outcomes import OutcomeStore
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.monitor.quality import LiveQuality, QualityCollector
from quantcrew.ml_server.services.monitor.reference import ReferenceStore
from quantcrew.ml_server.services.monitor.rules import load_rules
from quantcrew.ml_server.threads import limit_compute_threads

if TYPE_CHECKING:
    from quantcrew.ml_server.mcp_server import McpEndpoint

__all__ = ["create_app", "items_setting", "max_items"]

logger = logging.getLogger("quantcrew.ml_server")

_NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
"""FastAPI's OpenTelemetry bridge, off: the server reports through Prometheus (``/metrics``), and the bridge
asks the OpenTelemetry API for its providers on every request, whether or not any is configured."""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ML server app. Models, registry and device are set up in the lifespan.

    Args:
        settings: The settings tree; defaults to :func:`get_settings` (environment).
    """
    settings = settings or get_settings()
    rules = load_rules(settings.monitor.alert_rules)  # a bad rule file stops the server here, naming the line

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = limit_compute_threads(settings.server.compute_threads)
        app.state.registry = ModelRegistry(settings.registry_db, settings.artifacts_dir,
                                           cache_size=settings.server.model_cache_size)
        app.state.device = resolve_device(settings.server.device)
        app.state.bandits = BanditStore(settings.registry_db)
        app.state.jobs = JobManager(settings.registry_db, workers=settings.server.job_workers,
                                    shared=settings.server.shared_home)
        app.state.deployments = DeploymentStore(settings.registry_db)
        # stages, promotion, rollback, lineage parents and retention over the two (no store of its own)
        app.state.lifecycle = Lifecycle(app.state.registry, app.state.deployments,
                                        keep_versions=settings.monitor.keep_versions)
        app.state.lifecycle.attach()
        app.state.references = ReferenceStore(settings.registry_db)  # drift references per model version
        # every torch forward pass runs on this one thread: passes on a device never overlap, and
        # MC dropout's brief switch to train mode cannot leak into a concurrent pass
        app.state.device_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quantcrew-device")
        app.state.batchers = BatcherPool()
        _open_monitor(app, settings)
        app.state.alerts = open_alerts(app.state, settings, rules)
        logger.info("quantcrew ML server ready on device %s with %d models",
                    app.state.device, app.state.registry.count())
        try:
            async with mcp.serving() if mcp is not None else nullcontext():  # after the state it serves opens
                yield
        finally:
            app.state.alerts.close()
            app.state.jobs.shutdown()
            await app.state.batchers.aclose()
            app.state.device_executor.shutdown(wait=True, cancel_futures=True)
            _close_monitor(app)
            app.state.deployments.close()
            app.state.references.close()
            app.state.bandits.close()
            app.state.registry.close()
            app.state.device = None
            if limits is not None:
                limits.restore_original_limits()

    app = FastAPI(
        title="quantcrew ML server",
        version=__version__,
        summary="Regime, risk, RL, ensemble and execution models for quantcrew's agents.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: /docs is served by routes.docs instead
        redoc_url=None,
        telemetry=_NO_TELEMETRY,
    )
    app.state.settings = settings
    app.state.family_names = tuple(FAMILIES)  # /ready lists them (routes cannot import the families: a cycle)
    app.state.metrics = Metrics()
    app.state.device = None
    key = settings.server.api_key
    app.state.api_key = key.get_secret_value().encode() if key is not None else None
    protect_ops = settings.server.protect_ops
    # the bearer scheme is declared where the key is asked for, so the OpenAPI document says which routes need it
    keyed = [Depends(require_api_key)] if key is not None else []

    index = RouteIndex()
    app.router.routes.append(index)  # before the groups below: it sends each request to the one that can match

    def include(router: APIRouter, prefix: str = "", dependencies: Sequence[Any] = ()) -> None:
        before = len(app.router.routes)
        app.include_router(router, prefix=prefix, dependencies=dependencies)
        paths = [prefix + route.path for route in router.routes if isinstance(route, APIRoute)]
        for group in app.router.routes[before:]:  # one lazy group (FastAPI >= 0.16x), or the routes themselves
            index.add(group, paths)

    include(health.router)
    include(health.ops_router, dependencies=keyed if protect_ops else [])
    include(docs.router)
    for router in [*(family.router for family in FAMILIES.values()), models.router, jobs.router]:
        include(router, prefix="/v1", dependencies=keyed)
    mcp: McpEndpoint | None = None
    if settings.server.mcp:  # the families as MCP tools at /mcp
        from quantcrew.ml_server.mcp_server import McpEndpoint

        mcp = app.state.mcp = McpEndpoint(app)
        app.router.routes.append(mcp.route)
        index.add(mcp.route, [mcp.route.path])
    install_error_handlers(app)
    # Added innermost first. Metrics sees every request, refused ones included; the key is checked from the
    # headers before anything reads the body; the size limits refuse a body before the parser sees it.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.server.max_body_bytes,
                       max_items=max_items(settings), items_setting=items_setting(settings))
    app.add_middleware(APIKeyMiddleware, key=app.state.api_key, protect_ops=protect_ops)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def _open_monitor(app: FastAPI, settings: Settings) -> None:
    """The prediction log (a disabled one when ``monitor.prediction_log`` is off), outcomes, live quality."""
    mon = settings.monitor
    app.state.predictions = (PredictionLog(settings.registry_db, flush_ms=mon.log_flush_ms,
                                           queue_max=mon.log_queue_max, retention_rows=mon.log_retention_rows,
                                           retention_days=mon.log_retention_days, metrics=app.state.metrics)
                             if mon.prediction_log else PredictionLog.disabled())
    app.state.outcomes = OutcomeStore(settings.registry_db)
    app.state.quality = LiveQuality(settings.registry_db, window=mon.quality_window, min_samples=mon.min_samples)
    app.state.quality_collector = QualityCollector(app.state.quality)
    app.state.metrics.registry.register(app.state.quality_collector)


def _close_monitor(app: FastAPI) -> None:
    app.state.metrics.registry.unregister(app.state.quality_collector)
    app.state.predictions.close()  # writes what is queued
    app.state.quality.close()
    app.state.outcomes.close()


def _item_limits(settings: Settings) -> dict[str, int]:
    return {"QUANTCREW_SERVER__MAX_ROWS": settings.server.max_rows,
            "QUANTCREW_SERVER__MAX_COLUMNS": settings.server.max_columns,
            "QUANTCREW_INFERENCE__MAX_REQUEST_BATCH": settings.inference.max_request_batch}


def max_items(settings: Settings) -> int:
    """Most entries one JSON array or object of a request may have: the largest of the row, column and batch
    limits, since no request field is longer than the one of them that bounds it."""
    return max(_item_limits(settings).values())


def items_setting(settings: Settings) -> str:
    """The setting that :func:`max_items` comes from (named in the 413)."""
    limits = _item_limits(settings)
    return max(limits, key=lambda name: limits[name])
