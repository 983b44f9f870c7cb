"""Anomaly family: IsolationForest scores and flags on causal OHLCV features."""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server import offload
from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.anomaly import (
    AnomalyFitRequest,
    AnomalyFitResponse,
    AnomalyRequest,
    AnomalyResponse,
    AnomalyScoreRequest,
)
from quantcrew.ml_server.services.anomaly import service

router = APIRouter(prefix="/anomaly", tags=["anomaly"], route_class=ORJSONRoute)


@router.post("/detect", response_model=AnomalyResponse, responses=ERROR_RESPONSES)
def detect(req: AnomalyRequest, server: ServerDep) -> Response:
    """Fit an IsolationForest on the bars and score each one (nothing kept)."""
    settings, metrics = server.settings, server.metrics
    check_rows(req.data, max_rows=settings.server.max_rows)
    reply = service.detect(req, min_rows=settings.server.min_rows)
    metrics.fits.labels("anomaly", reply.method_used, str(reply.fallback).lower()).inc()
    return model_response(reply)


@router.post("/fit", response_model=AnomalyFitResponse, responses=ERROR_RESPONSES)
def fit(req: AnomalyFitRequest, server: ServerDep) -> Response:
    """Fit an IsolationForest, store it as a new version of ``name``, and score the training bars."""
    settings, registry, metrics = server.settings, server.registry, server.metrics
    check_rows(req.data, max_rows=settings.server.max_rows)
    reply = service.fit(req, registry, min_rows=settings.server.min_rows)
    metrics.fits.labels("anomaly", reply.method_used, str(reply.fallback).lower()).inc()
    return model_response(reply)


@router.post("/score", response_model=AnomalyResponse, responses=ERROR_RESPONSES)
async def score(req: AnomalyScoreRequest, server: ServerDep) -> Response:
    """Score new bars with a stored model: the fit's scaler, forest and threshold, no refit.

    The model is a pinned `model_id`, or the version the deployment stages of `name` route the request to.
    """
    settings = server.settings
    registry = server.registry
    predictions = server.predictions
    deployments = server.deployments
    check_rows(req.data, max_rows=settings.server.max_rows)
    inline = offload.is_light(registry, deployments, req, len(req.data))
    return model_response(await offload.run(inline, service.score, req, registry, predictions, deployments))
