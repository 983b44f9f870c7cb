"""Anomaly family: IsolationForest scores and flags on causal OHLCV features."""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server.deps import MetricsDep, RegistryDep, SettingsDep
from quantcrew.ml_server.errors import ArtifactIntegrityError
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.anomaly import (
    AnomalyFitRequest,
    AnomalyFitResponse,
    AnomalyRequest,
    AnomalyResponse,
    AnomalyScoreRequest,
)
from quantcrew.ml_server.services import anomaly as service
from quantcrew.ml_server.services.bars import bars_from_payload

router = APIRouter(prefix="/anomaly", tags=["anomaly"], route_class=ORJSONRoute)


@router.post("/detect", response_model=AnomalyResponse, responses=ERROR_RESPONSES)
def detect(req: AnomalyRequest, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """Fit an IsolationForest on the bars and score each one (nothing kept)."""
    check_rows(req.data, max_rows=settings.server.max_rows)
    _, _, response = service.detect(req, min_rows=settings.server.min_rows)
    metrics.fits.labels("anomaly", service.METHOD, "false").inc()
    return model_response(response)


@router.post("/fit", response_model=AnomalyFitResponse, responses=ERROR_RESPONSES)
def fit(req: AnomalyFitRequest, settings: SettingsDep, registry: RegistryDep, metrics: MetricsDep) -> Response:
    """Fit an IsolationForest, store it as a new version of ``name``, and score the training bars."""
    check_rows(req.data, max_rows=settings.server.max_rows)
    detector, bars, scored = service.detect(req, min_rows=settings.server.min_rows)
    metrics.fits.labels("anomaly", service.METHOD, "false").inc()
    metadata = detector.to_metadata()
    metadata.update(data_hash=bars.data_hash, data_start=bars.iso()[0], data_end=bars.iso()[-1], n_bars=len(bars))
    info = registry.save(family="anomaly", name=req.name, method=service.METHOD, obj=detector.pipeline_,
                         fmt="skops", metadata=metadata)
    # the scores are already computed: only the provenance changes once the model is stored
    fields = {name: getattr(scored, name) for name in type(scored).model_fields}
    fields.update(model_id=info.model_id, model_version=info.version, model=info)
    return model_response(AnomalyFitResponse.model_construct(**fields))


@router.post("/score", response_model=AnomalyResponse, responses=ERROR_RESPONSES)
def score(req: AnomalyScoreRequest, settings: SettingsDep, registry: RegistryDep) -> Response:
    """Score new bars with a stored model: the fit's scaler, forest and threshold, no refit."""
    check_rows(req.data, max_rows=settings.server.max_rows)
    stored, info = registry.load(req.model_id, family="anomaly")
    try:
        detector = service.AnomalyDetector.from_parts(stored, info.metadata)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactIntegrityError(f"model '{info.model_id}' cannot be used as an anomaly model: {exc}",
                                     details={"model_id": info.model_id}) from exc
    bars = bars_from_payload(req.data, min_rows=2)
    return model_response(detector.to_response(bars, top_k=req.top_k, model_id=info.model_id,
                                               model_version=info.version))
