"""Regime family: Gaussian HMM regimes with filtered probabilities, and causal (walk-forward) labelling jobs."""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server import offload
from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.schemas.regime import (
    RegimeCausalRequest,
    RegimeFitRequest,
    RegimeFitResponse,
    RegimeLabelRequest,
    RegimeLabelResponse,
    RegimePredictRequest,
)
from quantcrew.ml_server.services.regime import causal, service

# A predict on this many bars takes a few milliseconds on the event loop (see offload)
_LIGHT_ROWS = 5_000

router = APIRouter(prefix="/regime", tags=["regime"], route_class=ORJSONRoute)


@router.post("/label", response_model=RegimeLabelResponse, responses=ERROR_RESPONSES)
def label(req: RegimeLabelRequest, server: ServerDep) -> Response:
    """Fit an HMM on the bars and label each one from filtered probabilities (nothing kept)."""
    settings, metrics = server.settings, server.metrics
    check_rows(req.data, max_rows=settings.server.max_rows)
    reply = service.label(req, min_rows=settings.server.min_rows)
    metrics.fits.labels("regime", reply.method_used, str(reply.fallback).lower()).inc()
    return model_response(reply)


@router.post("/fit", response_model=RegimeFitResponse, responses=ERROR_RESPONSES)
def fit(req: RegimeFitRequest, server: ServerDep) -> Response:
    """Fit an HMM, store it as a new version of ``name``, and label the training bars."""
    settings, registry, metrics = server.settings, server.registry, server.metrics
    check_rows(req.data, max_rows=settings.server.max_rows)
    reply = service.fit(req, registry, min_rows=settings.server.min_rows)
    metrics.fits.labels("regime", reply.method_used, str(reply.fallback).lower()).inc()
    return model_response(reply)


@router.post("/causal", response_model=JobInfo, status_code=202, responses=ERROR_RESPONSES)
def causal_labels(req: RegimeCausalRequest, server: ServerDep) -> Response:
    """Label every bar from a model fitted on earlier bars only (a job; poll ``GET /v1/jobs/{job_id}``).

    Refits on an expanding window every ``refit_every`` bars after ``min_train``; each bar's label
    is the filtered pass of the latest fit. Checked before the job starts, so bad input is a 4xx here.
    """
    settings, jobs = server.settings, server.jobs
    check_rows(req.data, max_rows=settings.server.max_rows)
    return model_response(causal.start(req, jobs), status_code=202)


@router.post("/predict", response_model=RegimeLabelResponse, responses=ERROR_RESPONSES)
async def predict(req: RegimePredictRequest, server: ServerDep) -> Response:
    """Label new bars with a stored model: filtered probabilities, no refit.

    The model is a pinned `model_id`, or the version the deployment stages of `name` route the request to.
    """
    settings = server.settings
    registry = server.registry
    predictions = server.predictions
    deployments = server.deployments
    check_rows(req.data, max_rows=settings.server.max_rows)
    inline = offload.is_light(registry, deployments, req, len(req.data), max_rows=_LIGHT_ROWS)
    return model_response(await offload.run(inline, service.predict, req, registry, predictions, deployments))
