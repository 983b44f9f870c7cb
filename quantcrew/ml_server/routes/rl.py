"""RL family: specialized trading policies (stable-baselines3), trained as jobs, asked and backtested."""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.fanout import TaskPool
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.schemas.rl import (
    RLActRequest,
    RLActResponse,
    RLEvaluateRequest,
    RLEvaluateResponse,
    RLTrainRequest,
)
from quantcrew.ml_server.services.rl import service

router = APIRouter(prefix="/rl", tags=["rl"], route_class=ORJSONRoute)


@router.post("/train", response_model=JobInfo, status_code=202, responses=ERROR_RESPONSES)
def train(req: RLTrainRequest, server: ServerDep) -> Response:
    """Start a training job (one policy kept per agent); poll ``GET /v1/jobs/{job_id}`` for progress and the result.

    Each agent is trained once per seed and grid configuration on the first part of the training
    span; the run best on the validation bars that end it is kept and judged by its quality gate
    (its specialty in its own regime) on the test span; one that passes is deployed for the
    request's symbol. Every run's validation score and test figures are in the result. The
    request is checked before the job starts (steps cap over every run, enough training,
    validation and test bars), so bad input is a 422 here, not a failed job later.
    """
    settings, registry, jobs, deployments = server.settings, server.registry, server.jobs, server.deployments
    check_rows(req.data, max_rows=settings.server.max_rows)
    info = service.train(req, registry, jobs, max_timesteps=settings.server.max_timesteps,
                         min_rows=settings.server.min_rows, compute_threads=settings.server.compute_threads,
                         deployments=deployments, pool=TaskPool.from_settings(settings))
    return model_response(info, status_code=202)


@router.post("/act", response_model=RLActResponse, responses=ERROR_RESPONSES)
def act(req: RLActRequest, server: ServerDep) -> Response:
    """Each selected policy's action at the last bar, with its probabilities (or Q-values).

    With a ``symbol``, the policies deployed for it answer (those that passed their gate); agents
    whose policies were gated are listed in ``gated``, not answered.
    """
    settings = server.settings
    registry = server.registry
    deployments = server.deployments
    predictions = server.predictions
    check_rows(req.data, max_rows=settings.server.max_rows)
    return model_response(service.act(req, registry, deployments, predictions))


@router.post("/evaluate", response_model=RLEvaluateResponse, responses=ERROR_RESPONSES)
def evaluate(req: RLEvaluateRequest, server: ServerDep) -> Response:
    """Out-of-sample backtest of each selected policy after costs, beside buy-and-hold and flat, with the quality
    gate's verdict on that span; annualised with the bars per year of the bars' own calendar (``periods_per_year``)."""
    settings, registry = server.settings, server.registry
    check_rows(req.data, max_rows=settings.server.max_rows)
    return model_response(service.evaluate(req, registry))
