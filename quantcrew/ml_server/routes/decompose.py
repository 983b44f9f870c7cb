"""Decompose family: PCA, FastICA and NMF factors of a returns matrix."""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server import offload
from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.limits import check_matrix
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.decompose import (
    DecomposeFitRequest,
    DecomposeFitResponse,
    DecomposeRequest,
    DecomposeResponse,
    DecomposeTransformRequest,
    DecomposeTransformResponse,
)
from quantcrew.ml_server.services.decompose import service

router = APIRouter(prefix="/decompose", tags=["decompose"], route_class=ORJSONRoute)


@router.post("/analyze", response_model=DecomposeResponse, responses=ERROR_RESPONSES)
def analyze(req: DecomposeRequest, server: ServerDep) -> Response:
    """Decompose the matrix into components, explained variance and exposures (nothing kept)."""
    settings, metrics = server.settings, server.metrics
    check_matrix(req.data, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns)
    reply = service.analyze(req)
    metrics.fits.labels("decompose", reply.method_used, str(reply.fallback).lower()).inc()
    return model_response(reply)


@router.post("/fit", response_model=DecomposeFitResponse, responses=ERROR_RESPONSES)
def fit(req: DecomposeFitRequest, server: ServerDep) -> Response:
    """Decompose the matrix and store the fitted model (scaling and NMF shift included) as a new version."""
    settings, registry, metrics = server.settings, server.registry, server.metrics
    check_matrix(req.data, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns)
    reply = service.fit(req, registry, min_rows=settings.server.min_rows)
    metrics.fits.labels("decompose", reply.method_used, str(reply.fallback).lower()).inc()
    return model_response(reply)


@router.post("/transform", response_model=DecomposeTransformResponse, responses=ERROR_RESPONSES)
async def transform(req: DecomposeTransformRequest, server: ServerDep) -> Response:
    """Project new rows onto a stored model's components (no refit).

    The model is a pinned `model_id`, or the version the deployment stages of `name` route the request to.
    """
    settings, registry, deployments = server.settings, server.registry, server.deployments
    check_matrix(req.data, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns)
    inline = offload.is_light(registry, deployments, req, len(req.data.values))
    return model_response(await offload.run(inline, service.transform, req, registry, deployments))
