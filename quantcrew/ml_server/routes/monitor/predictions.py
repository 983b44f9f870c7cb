"""Monitor routes: outcomes posted by clients, the prediction log and live quality per model version."""

from __future__ import annotations

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from quantcrew.ml_server.deps import LiveQualityDep, OutcomesDep, PredictionLogDep, RegistryDep
from quantcrew.ml_server.errors import ModelNotFoundError
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.monitor import (
    ModelQuality,
    OutcomeBatch,
    OutcomeList,
    OutcomesAccepted,
    PredictionInfo,
    PredictionList,
)
from quantcrew.ml_server.services.monitor.outcomes import outcome_info

router = APIRouter(route_class=ORJSONRoute)


@router.post("/outcomes", response_model=OutcomesAccepted, responses=ERROR_RESPONSES)
def post_outcomes(req: OutcomeBatch, outcomes: OutcomesDep) -> Response:
    """Record what happened after decisions: the realised return of the bar after each ``as_of``.

    Idempotent per ``outcome_id``: the same outcome posted again is counted as ``known``; the same id with
    another value is a 409 naming the field, and nothing of the batch is written.
    """
    inserted, known = outcomes.add(req.outcomes)
    return model_response(OutcomesAccepted(inserted=inserted, known=known))


@router.get("/outcomes", response_model=OutcomeList, responses=ERROR_RESPONSES)
def list_outcomes(outcomes: OutcomesDep, subject: str | None = None,
                  limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """The newest outcomes (of one subject), newest first."""
    return model_response(OutcomeList(outcomes=[outcome_info(o) for o in outcomes.recent(limit, subject)]))


@router.get("/predictions/{model_id}", response_model=PredictionList, responses=ERROR_RESPONSES)
def list_predictions(model_id: str, log: PredictionLogDep, limit: int = Query(default=100, ge=1, le=10_000),
                     ) -> Response:
    """A model version's logged predictions, newest first (what is still queued is written first)."""
    log.flush(timeout=5.0)
    rows = log.recent(model_id, limit)
    return model_response(PredictionList(predictions=[PredictionInfo(
        id=r.id, at=r.at, model_id=r.model_id, name=r.name, version=r.version, family=r.family, route=r.route,
        request_hash=r.request_hash, subject=r.subject, as_of=r.as_of, features=r.features, output=r.output,
        label=r.label, confidence=r.confidence, shadow=r.shadow) for r in rows]))


@router.get("/models/{model_id}", response_model=ModelQuality, responses=ERROR_RESPONSES)
async def model_quality(model_id: str, quality: LiveQualityDep, registry: RegistryDep) -> Response:
    """Live quality of one model version over sliding windows of its settled predictions, with sample counts.

    404 for a model id neither in the registry nor in the prediction log.
    """
    def compute() -> ModelQuality:
        logged = quality.resolve(model_id)
        if logged is not None and logged[0] == model_id:
            return quality.report(model_id)
        try:
            info = registry.get(model_id)
        except ModelNotFoundError:
            raise ModelNotFoundError(f"no model '{model_id}' in the registry or the prediction log",
                                     details={"model_id": model_id}) from None
        return quality.report(model_id, name=info.name, version=info.version, family=info.family)

    return model_response(await run_in_threadpool(compute))
