"""Ensemble family: walk-forward training, batched predictions with uncertainty, deployment stages.

Predictions are ``async``: preparation and post-processing run in the thread pool, and the
forward pass waits in the model's dynamic batcher (one device thread), so concurrent requests
share one pass. torch loads on first use, not when the server starts.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.fanout import TaskPool
from quantcrew.ml_server.limits import check_matrix, check_rows
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.ensemble import (
    DeploymentInfo,
    DeploymentList,
    DeploymentRequest,
    EnsemblePredictRequest,
    EnsemblePredictResponse,
    EnsembleTrainRequest,
    ShadowLog,
)
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.services.ensemble import service

router = APIRouter(prefix="/ensemble", tags=["ensemble"], route_class=ORJSONRoute)


@router.post("/train", response_model=JobInfo, status_code=202, responses=ERROR_RESPONSES)
def train(req: EnsembleTrainRequest, server: ServerDep) -> Response:
    """Start a walk-forward training job; poll ``GET /v1/jobs/{job_id}``.

    Features, labels and folds are checked here, so a series too short for the window,
    horizon and folds is a 422 now, not a failed job later.
    """
    settings = server.settings
    registry = server.registry
    jobs = server.jobs
    deployments = server.deployments
    request_device = server.device
    check_rows(req.data, max_rows=settings.server.max_rows)
    info = service.train(req, registry, jobs, deployments, device=request_device,
                         min_rows=settings.server.min_rows, compute_threads=settings.server.compute_threads,
                         pool=TaskPool.from_settings(settings))
    return model_response(info, status_code=202)


@router.post("/predict", response_model=EnsemblePredictResponse, responses=ERROR_RESPONSES)
async def predict(req: EnsemblePredictRequest, server: ServerDep) -> Response:
    """Signal, calibrated probability and uncertainty metrics from the deployed (or pinned) version.

    A shadow version also runs on the same input; its answer is logged, never returned.
    """
    settings = server.settings
    registry = server.registry
    deployments = server.deployments
    runtime = server.inference
    predictions = server.predictions
    if req.data is not None:
        check_rows(req.data, max_rows=settings.server.max_rows)
    if req.features is not None:
        check_matrix(req.features, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns,
                     field="features")
    return model_response(await service.predict(req, registry, deployments, runtime, predictions))


@router.post("/deployments", response_model=DeploymentInfo, responses=ERROR_RESPONSES)
def set_stage(req: DeploymentRequest, server: ServerDep) -> Response:
    """Deploy a stored ensemble (or execution network) version as shadow, canary, gradual or full.

    Also the hand override of a quality gate: a version that failed it answers once deployed here.
    """
    registry, deployments = server.registry, server.deployments
    return model_response(service.deploy(req, registry, deployments))


@router.get("/deployments", response_model=DeploymentList, responses=ERROR_RESPONSES)
def list_deployments(server: ServerDep, name: str | None = None) -> Response:
    """Every deployed version (optionally of one model name), newest first."""
    deployments = server.deployments
    return model_response(service.deployment_list(deployments, name))


@router.get("/deployments/{model_id}/shadow", response_model=ShadowLog, responses=ERROR_RESPONSES)
def shadow_log(model_id: str, server: ServerDep, limit: int = 100) -> Response:
    """A shadow version's logged answers, newest first, beside the version that answered."""
    deployments = server.deployments
    return model_response(service.shadow_log(deployments, model_id, limit))
