"""Regime family: Gaussian HMM regimes with filtered (causal) probabilities."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from quantcrew.ml_server.deps import MetricsDep, RegistryDep, SettingsDep
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.regime import (
    RegimeFitRequest,
    RegimeFitResponse,
    RegimeLabelRequest,
    RegimeLabelResponse,
    RegimePredictRequest,
)
from quantcrew.ml_server.services import regime as service
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.regime_store import load_detector, save_detector

# A predict on this many bars takes a few milliseconds: cheaper on the event loop than the
# worker-thread hop FastAPI makes for sync handlers. Longer inputs (and every fit) go to a thread.
_INLINE_ROWS = 5_000

router = APIRouter(prefix="/regime", tags=["regime"], route_class=ORJSONRoute)



@router.post("/label", response_model=RegimeLabelResponse, responses=ERROR_RESPONSES)
def label(req: RegimeLabelRequest, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """Fit an HMM on the bars and label each one from filtered probabilities (nothing kept)."""
    check_rows(req.data, max_rows=settings.server.max_rows)
    detector, _, response = service.label_bars(req, min_rows=settings.server.min_rows)
    metrics.fits.labels("regime", detector.method_used_, str(detector.fallback_).lower()).inc()
    return model_response(response)


@router.post("/fit", response_model=RegimeFitResponse, responses=ERROR_RESPONSES)
def fit(req: RegimeFitRequest, settings: SettingsDep, registry: RegistryDep, metrics: MetricsDep) -> Response:
    """Fit an HMM, store it as a new version of ``name``, and label the training bars."""
    check_rows(req.data, max_rows=settings.server.max_rows)
    detector, bars, labelled = service.label_bars(req, min_rows=settings.server.min_rows)
    metrics.fits.labels("regime", detector.method_used_, str(detector.fallback_).lower()).inc()
    info = save_detector(registry, detector, name=req.name, metadata={
        "data_hash": bars.data_hash, "data_start": bars.iso()[0], "data_end": bars.iso()[-1], "n_bars": len(bars)})
    # the labels are already computed: only the provenance changes once the model is stored
    fields = {name: getattr(labelled, name) for name in type(labelled).model_fields}
    fields.update(model_id=info.model_id, model_version=info.version, model=info)
    return model_response(RegimeFitResponse.model_construct(**fields))


@router.post("/predict", response_model=RegimeLabelResponse, responses=ERROR_RESPONSES)
async def predict(req: RegimePredictRequest, settings: SettingsDep, registry: RegistryDep) -> Response:
    """Label new bars with a stored model: filtered probabilities, no refit."""
    check_rows(req.data, max_rows=settings.server.max_rows)
    if len(req.data) <= _INLINE_ROWS:
        return _predict(req, registry)
    return await run_in_threadpool(_predict, req, registry)


def _predict(req: RegimePredictRequest, registry: ModelRegistry) -> Response:
    detector, info = load_detector(registry, req.model_id)
    bars = bars_from_payload(req.data, min_rows=2)
    return model_response(detector.to_response(bars, model_id=info.model_id, model_version=info.version,
                                               include_probabilities=req.include_probabilities))
