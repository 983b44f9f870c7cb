"""Supervised family: RandomForest, GradientBoosting and MLP models with a chronological holdout."""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server.deps import MetricsDep, RegistryDep, SettingsDep
from quantcrew.ml_server.errors import ArtifactIntegrityError
from quantcrew.ml_server.limits import check_matrix
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.supervised import (
    SupervisedAnalyzeRequest,
    SupervisedFitRequest,
    SupervisedFitResponse,
    SupervisedPredictRequest,
    SupervisedPredictResponse,
)
from quantcrew.ml_server.services import supervised as service
from quantcrew.ml_server.services.matrix import matrix_from_payload

router = APIRouter(prefix="/supervised", tags=["supervised"], route_class=ORJSONRoute)


@router.post("/analyze", response_model=SupervisedFitResponse, responses=ERROR_RESPONSES)
def analyze(req: SupervisedAnalyzeRequest, settings: SettingsDep, metrics: MetricsDep) -> Response:
    """Fit on the first rows, evaluate on the chronological holdout, optionally predict new rows (nothing kept)."""
    limits = {"max_rows": settings.server.max_rows, "max_columns": settings.server.max_columns}
    check_matrix(req.features, field="features", **limits)
    if req.predict_features is not None:
        check_matrix(req.predict_features, field="predict_features", **limits)
    _, response = service.evaluate(req, min_rows=settings.server.min_rows, predict_features=req.predict_features)
    metrics.fits.labels("supervised", req.method, "false").inc()
    return model_response(response)


@router.post("/fit", response_model=SupervisedFitResponse, responses=ERROR_RESPONSES)
def fit(req: SupervisedFitRequest, settings: SettingsDep, registry: RegistryDep, metrics: MetricsDep) -> Response:
    """Fit and evaluate like /analyze, and store the model as a new version of ``name``."""
    check_matrix(req.features, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns,
                 field="features")
    model, evaluated = service.evaluate(req, min_rows=settings.server.min_rows)
    metrics.fits.labels("supervised", req.method, "false").inc()
    metadata = model.metadata()
    metadata.update(
        params=req.model_dump(exclude={"features", "target", "name"}), data_hash=evaluated.data_hash,
        n_train=evaluated.n_train, n_test=evaluated.n_test, metrics=evaluated.metrics,
        baseline_metrics=evaluated.baseline_metrics, importance_method=evaluated.importance_method,
        feature_importance=evaluated.feature_importance,
    )
    info = registry.save(family="supervised", name=req.name, method=req.method, obj=model.estimator,
                         fmt="skops", metadata=metadata)
    fields = {name: getattr(evaluated, name) for name in type(evaluated).model_fields}
    fields.update(model_id=info.model_id, model_version=info.version, model=info)
    return model_response(SupervisedFitResponse.model_construct(**fields))


@router.post("/predict", response_model=SupervisedPredictResponse, responses=ERROR_RESPONSES)
def predict(req: SupervisedPredictRequest, settings: SettingsDep, registry: RegistryDep) -> Response:
    """Predict rows with a stored model; columns must match the model's by name and order."""
    check_matrix(req.features, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns,
                 field="features")
    stored, info = registry.load(req.model_id, family="supervised")
    try:
        model = service.SupervisedModel.from_parts(stored, info.metadata)
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactIntegrityError(f"model '{info.model_id}' cannot be used as a supervised model: {exc}",
                                     details={"model_id": info.model_id}) from exc
    matrix = matrix_from_payload(req.features, min_rows=1, field="features")
    seed = info.metadata.get("params", {}).get("seed")
    return model_response(model.predict_response(matrix, include_probabilities=req.include_probabilities,
                                                 model_id=info.model_id, model_version=info.version, seed=seed))
