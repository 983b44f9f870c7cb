"""Supervised family: RandomForest, GradientBoosting and MLP models with a chronological holdout."""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server import offload
from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.limits import check_matrix
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.supervised import (
    SupervisedAnalyzeRequest,
    SupervisedFitRequest,
    SupervisedFitResponse,
    SupervisedPredictRequest,
    SupervisedPredictResponse,
)
from quantcrew.ml_server.services.supervised import service

router = APIRouter(prefix="/supervised", tags=["supervised"], route_class=ORJSONRoute)


@router.post("/analyze", response_model=SupervisedFitResponse, responses=ERROR_RESPONSES)
def analyze(req: SupervisedAnalyzeRequest, server: ServerDep) -> Response:
    """Fit on the first rows, evaluate on the chronological holdout, optionally predict new rows (nothing kept)."""
    settings, metrics = server.settings, server.metrics
    limits = {"max_rows": settings.server.max_rows, "max_columns": settings.server.max_columns}
    check_matrix(req.features, field="features", **limits)
    if req.predict_features is not None:
        check_matrix(req.predict_features, field="predict_features", **limits)
    reply = service.analyze(req, min_rows=settings.server.min_rows)
    metrics.fits.labels("supervised", reply.method_used, str(reply.fallback).lower()).inc()
    return model_response(reply)


@router.post("/fit", response_model=SupervisedFitResponse, responses=ERROR_RESPONSES)
def fit(req: SupervisedFitRequest, server: ServerDep) -> Response:
    """Fit and evaluate like /analyze, and store the model as a new version of ``name``."""
    settings, registry, metrics = server.settings, server.registry, server.metrics
    check_matrix(req.features, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns,
                 field="features")
    reply = service.fit(req, registry, min_rows=settings.server.min_rows)
    metrics.fits.labels("supervised", reply.method_used, str(reply.fallback).lower()).inc()
    return model_response(reply)


@router.post("/predict", response_model=SupervisedPredictResponse, responses=ERROR_RESPONSES)
async def predict(req: SupervisedPredictRequest, server: ServerDep) -> Response:
    """Predict rows with a stored model; columns must match the model's by name and order.

    The model is a pinned `model_id`, or the version the deployment stages of `name` route the request to.
    """
    settings = server.settings
    registry = server.registry
    predictions = server.predictions
    deployments = server.deployments
    check_matrix(req.features, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns,
                 field="features")
    inline = offload.is_light(registry, deployments, req, len(req.features.values))
    return model_response(await offload.run(inline, service.predict, req, registry, predictions, deployments))
