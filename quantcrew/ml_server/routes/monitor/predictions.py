"""Monitor routes: outcomes posted by clients, the prediction log and live quality per model version."""

from __future__ import annotations

from fastapi import Query, Response
from starlette.concurrency import run_in_threadpool

from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.routes.monitor.shared import monitor_router
from quantcrew.ml_server.routing import ERROR_RESPONSES, model_response
from quantcrew.ml_server.schemas.monitor import (
    ModelQuality,
    OutcomeBatch,
    OutcomeList,
    OutcomesAccepted,
    PredictionList,
)
from quantcrew.ml_server.services.monitor import service

router = monitor_router  # routes below are added to the family's one router


@router.post("/outcomes", response_model=OutcomesAccepted, responses=ERROR_RESPONSES)
def post_outcomes(req: OutcomeBatch, server: ServerDep) -> Response:
    """Record what happened after decisions: the realised return of the bar after each ``as_of``.

    Idempotent per ``outcome_id``: the same outcome posted again is counted as ``known``; the same id with
    another value is a 409 naming the field, and nothing of the batch is written.
    """
    outcomes = server.outcomes
    return model_response(service.record_outcomes(outcomes, req))


@router.get("/outcomes", response_model=OutcomeList, responses=ERROR_RESPONSES)
def list_outcomes(server: ServerDep, subject: str | None = None,
                  limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """The newest outcomes (of one subject), newest first."""
    outcomes = server.outcomes
    return model_response(service.list_outcomes(outcomes, subject=subject, limit=limit))


@router.get("/predictions/{model_id}", response_model=PredictionList, responses=ERROR_RESPONSES)
def list_predictions(model_id: str, server: ServerDep, limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """A model version's logged predictions, newest first (what is still queued is written first)."""
    log = server.predictions
    return model_response(service.list_predictions(log, model_id, limit=limit))


@router.get("/models/{model_id}", response_model=ModelQuality, responses=ERROR_RESPONSES)
async def model_quality(model_id: str, server: ServerDep) -> Response:
    """Live quality of one model version over sliding windows of its settled predictions, with sample counts.

    404 for a model id neither in the registry nor in the prediction log.
    """
    quality, registry, log = server.quality, server.registry, server.predictions
    return model_response(await run_in_threadpool(service.model_quality, quality, registry, model_id, log))
