"""Liveness, readiness and Prometheus metrics.

``/health`` (:data:`router`) never needs the API key; ``/ready`` and ``/metrics``
(:data:`ops_router`) need it when a key is set and ``server.protect_ops`` is true.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from quantcrew import __version__
from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.errors import ModelNotReadyError
from quantcrew.ml_server.schemas.common import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])
ops_router = APIRouter(tags=["health"])



@router.get("/health")
def health() -> HealthResponse:
    """Liveness: the process is up and answering."""
    return HealthResponse(status="ok", version=__version__)


@ops_router.get("/ready", responses={503: {"description": "Not ready yet"}})
def ready(request: Request, server: ServerDep) -> ReadyResponse:
    """Readiness: registry open and the compute device resolved."""
    registry = server.registry
    device: str | None = getattr(request.app.state, "device", None)
    if device is None:
        raise ModelNotReadyError("server is starting: device not resolved yet")
    families = list(request.app.state.family_names)
    return ReadyResponse(ready=True, device=device, models=registry.count(), families=families)


@ops_router.get("/metrics", response_class=Response)
def metrics(server: ServerDep) -> Response:
    """Prometheus exposition of request counts, latencies and model fits."""
    metrics, registry = server.metrics, server.registry
    metrics.models.set(registry.count())
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

