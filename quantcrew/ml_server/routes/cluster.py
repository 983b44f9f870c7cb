"""Cluster family: KMeans, DBSCAN and Gaussian mixtures of market states or assets."""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server import offload
from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.limits import check_matrix
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.cluster import (
    ClusterFitRequest,
    ClusterFitResponse,
    ClusterPredictRequest,
    ClusterPredictResponse,
    ClusterRequest,
    ClusterResponse,
)
from quantcrew.ml_server.services.cluster import service

router = APIRouter(prefix="/cluster", tags=["cluster"], route_class=ORJSONRoute)


@router.post("/analyze", response_model=ClusterResponse, responses=ERROR_RESPONSES)
def analyze(req: ClusterRequest, server: ServerDep) -> Response:
    """Cluster the rows (market states) or the assets and describe the clusters (nothing kept)."""
    settings, metrics = server.settings, server.metrics
    check_matrix(req.data, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns)
    reply = service.analyze(req)
    metrics.fits.labels("cluster", reply.method_used, str(reply.fallback).lower()).inc()
    return model_response(reply)


@router.post("/fit", response_model=ClusterFitResponse, responses=ERROR_RESPONSES)
def fit(req: ClusterFitRequest, server: ServerDep) -> Response:
    """Cluster the rows and store the model (scaler included) as a new version; observations mode only."""
    settings, registry, metrics = server.settings, server.registry, server.metrics
    service.check_storable(req)  # a request that cannot be stored is refused before its size is looked at
    check_matrix(req.data, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns)
    reply = service.fit(req, registry, min_rows=settings.server.min_rows)
    metrics.fits.labels("cluster", reply.method_used, str(reply.fallback).lower()).inc()
    return model_response(reply)


@router.post("/predict", response_model=ClusterPredictResponse, responses=ERROR_RESPONSES)
async def predict(req: ClusterPredictRequest, server: ServerDep) -> Response:
    """Assign new rows to a stored model's clusters (no refit).

    The model is a pinned `model_id`, or the version the deployment stages of `name` route the request to.
    """
    settings = server.settings
    registry = server.registry
    predictions = server.predictions
    deployments = server.deployments
    check_matrix(req.data, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns)
    inline = offload.is_light(registry, deployments, req, len(req.data.values))
    return model_response(await offload.run(inline, service.predict, req, registry, predictions, deployments))
