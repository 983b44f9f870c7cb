"""Supervised family: RandomForest, GradientBoosting or an MLP on a feature table, regression or classification.

Evaluation is CHRONOLOGICAL: rows are observations in time order and the holdout is the last
``floor(rows * test_fraction)`` rows, never shuffled, so no metric scores a row older than some
training row. The model is fitted on the first rows only; the registry keeps that model (it is
not refitted on all rows, so the stored model is the one the metrics describe).

Models (seeded with ``random_state=seed``):

* ``random_forest``: ``RandomForest{Regressor,Classifier}(n_estimators, max_depth)``.
* ``gradient_boosting``: ``GradientBoosting{Regressor,Classifier}(n_estimators, learning_rate,
  max_depth)``; ``max_depth=None`` means scikit-learn's default depth 3 (unlimited trees would
  make boosting pointless).
* ``mlp``: ``Pipeline(StandardScaler, MLP{Regressor,Classifier}(hidden_layer_sizes,
  learning_rate_init=learning_rate, max_iter))``. For regression the pipeline is wrapped in a
  ``TransformedTargetRegressor`` that standardises the target too, so a target in the thousands
  trains like one in units. A fit that hits ``max_iter`` is kept and reported in ``warnings``.

Classification targets (numbers or strings) are encoded as codes ``0..k-1`` of the classes seen
in the training rows, sorted; the stored model predicts codes, and ``classes`` (kept in the
registry metadata) turns them back into labels.

Input policy (422 unless said otherwise; the limits are in
:mod:`quantcrew.ml_server.services.supervised.split`): target length must equal the rows;
regression needs numeric targets; at least ``min_rows`` TRAINING rows; a holdout, when asked for,
of at least ``MIN_HOLDOUT`` rows (fewer would give meaningless metrics: raise ``test_fraction``,
send more rows, or set it to 0); at least 2 and at most ``MAX_CLASSES`` classes in the training
rows; no feature or numeric target beyond ``MAX_ABS_VALUE`` in magnitude. Constant feature
columns are allowed (trees never split on them) and named in ``warnings``.

Metrics, baselines and importance: :mod:`quantcrew.ml_server.services.supervised.evaluation`.

The model is :class:`~quantcrew.ml_server.services.supervised.model.SupervisedModel`; this module
holds the family's verbs: :func:`analyze` (stateless), :func:`fit` (stored) and :func:`predict` (a
stored model on new rows), and :func:`evaluate`, the fit and holdout evaluation both share.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import numpy as np

from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.schemas.supervised import (
    ImportanceKind,
    SupervisedAnalyzeRequest,
    SupervisedFitRequest,
    SupervisedFitResponse,
    SupervisedPredictRequest,
    SupervisedPredictResponse,
    SupervisedRequestBase,
)
from quantcrew.ml_server.services import serving
from quantcrew.ml_server.services.adapter import rebuild, store_fit
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.matrix import Matrix, matrix_from_payload
from quantcrew.ml_server.services.monitor import capture
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.monitor.reference import FloatArray, save_reference
from quantcrew.ml_server.services.supervised.evaluation import (
    Importance,
    baseline_metrics,
    classification_metrics,
    impurity_importance,
    permutation_importance_of,
    regression_metrics,
)
from quantcrew.ml_server.services.supervised.model import SupervisedModel
from quantcrew.ml_server.services.supervised.split import Split, check_magnitude, prepare

__all__ = ["analyze", "evaluate", "fit", "predict"]

_MODEL_PARAMS = frozenset({"task", "method", "n_estimators", "max_depth", "learning_rate", "hidden_layer_sizes",
                           "max_iter", "seed"})
"""The request fields that configure the model."""


def analyze(request: SupervisedAnalyzeRequest, *, min_rows: int) -> SupervisedFitResponse:
    """Fit on the first rows, evaluate on the chronological holdout, optionally predict new rows (nothing kept).

    Raises:
        InvalidInputError: any input the module docstring's policy refuses.
    """
    return evaluate(request, min_rows=min_rows, predict_features=request.predict_features)[1]


def fit(request: SupervisedFitRequest, registry: ModelRegistry, *, min_rows: int) -> SupervisedFitResponse:
    """Fit and evaluate like :func:`analyze`, and store the model as a new version of ``request.name``.

    Raises:
        InvalidInputError: any input the module docstring's policy refuses.
    """
    model, evaluated = evaluate(request, min_rows=min_rows)
    stored = store_fit(registry, model, evaluated, SupervisedFitResponse, name=request.name, metadata={
        "params": request.model_dump(exclude={"features", "target", "name", "trigger"}),
        "data_hash": evaluated.data_hash, **_span(request.features.timestamps),
        "n_train": evaluated.n_train, "n_test": evaluated.n_test, "metrics": evaluated.metrics,
        "baseline_metrics": evaluated.baseline_metrics, "importance_method": evaluated.importance_method,
        "feature_importance": evaluated.feature_importance,
    }, trigger=request.trigger)
    train = matrix_from_payload(request.features, min_rows=1, field="features").values[:evaluated.n_train]
    save_reference(registry.db_path, stored.model_id, "supervised", model.feature_names_, train,
                   drift_outputs(model, train))
    return stored


def drift_outputs(model: SupervisedModel, x: FloatArray) -> FloatArray:
    """The output scalar drift compares (the prediction log's): P(class 1) of a binary classifier, the class
    index of a multi-class one, the prediction of a regressor."""
    proba = model.predict_proba(x)
    if proba is None:
        return np.asarray(model.predict(x), dtype=np.float64)
    if proba.shape[1] == 2:
        return np.asarray(proba[:, 1], dtype=np.float64)
    return np.asarray(proba.argmax(axis=1), dtype=np.float64)


def _span(timestamps: list[datetime] | None) -> dict[str, str]:
    """The first and last row's time, when the rows have times (recorded in the model's lineage)."""
    if not timestamps:
        return {}
    return {"data_start": timestamps[0].isoformat(), "data_end": timestamps[-1].isoformat()}


def predict(request: SupervisedPredictRequest, registry: ModelRegistry, log: PredictionLog | None = None,
            deployments: DeploymentStore | None = None) -> SupervisedPredictResponse:
    """Predict rows with a stored model; columns must match the model's by name and order (logged on ``log``).

    The model is the pinned ``model_id``, or the version the deployment stages of ``name`` route the
    request to (its shadows run too: see :mod:`~quantcrew.ml_server.services.serving`).

    Raises:
        ModelNotFoundError: unknown id, or not a supervised model (404).
        NotFoundError: a name with no deployed version (404).
        ArtifactIntegrityError: the stored artifact is refused or does not rebuild (409).
        InvalidInputError: other columns, values beyond the magnitude limit, or non-finite predictions.
    """
    matrix = matrix_from_payload(request.features, min_rows=1, field="features")

    def answer(model_id: str, sink: PredictionLog | None) -> SupervisedPredictResponse:
        model, info = rebuild(registry, model_id, SupervisedModel)
        model.check_columns(matrix.columns, "features")
        check_magnitude(matrix.values, "features.values")
        proba = model.predict_proba(matrix.values) if request.include_probabilities else None
        reply = SupervisedPredictResponse(
            model_id=info.model_id, model_version=info.version, method_used=model.method, fallback=False,
            data_hash=matrix.data_hash, seed=info.metadata.get("params", {}).get("seed"), as_of=matrix.as_of,
            predictions=model.predict(matrix.values), probabilities=None if proba is None else proba.tolist(),
            classes=model.classes_,
        )
        capture.supervised(sink, request, info, model, matrix, reply)
        return reply

    return serving.serve(request, deployments, log, answer, lambda reply: {"prediction": reply.predictions[-1]})


def _data_hash(matrix: Matrix, target: list[float] | list[str]) -> str:
    digest = hashlib.sha256(matrix.data_hash.encode())
    if target and isinstance(target[0], str):
        digest.update("\x1f".join(str(t) for t in target).encode())
    else:
        digest.update(np.asarray(target, dtype=np.float64).tobytes())
    return "sha256:" + digest.hexdigest()


def _importance(model: SupervisedModel, request: SupervisedRequestBase, split: Split,
                notes: list[str]) -> tuple[ImportanceKind, Importance]:
    kind: ImportanceKind
    if request.importance == "auto":
        kind = "permutation" if request.method == "mlp" else "impurity"
    else:
        kind = request.importance
    if kind == "impurity":
        return kind, impurity_importance(model.estimator_, model.feature_names_)
    start = split.n_train if split.n_train < split.x.shape[0] else 0
    y_eval = split.y[start:]
    keep = np.asarray(y_eval >= 0) if model.classes_ is not None else np.ones(y_eval.shape[0], dtype=bool)
    if start > 0 and not keep.any():
        # no holdout row has a class seen in training (e.g. every label distinct): permute on the training rows
        notes.append("permutation importance on the training rows: no holdout row has a class seen in training")
        start, y_eval = 0, split.y
        keep = np.asarray(y_eval >= 0)
    return kind, permutation_importance_of(model.estimator_, split.x[start:][keep], y_eval[keep],
                                           model.feature_names_, request.seed, notes)


def evaluate(
    request: SupervisedRequestBase, *, min_rows: int, predict_features: MatrixPayload | None = None,
) -> tuple[SupervisedModel, SupervisedFitResponse]:
    """Fit on the first rows, evaluate on the chronological holdout, explain, optionally predict.

    Args:
        request: The validated request (analyze or fit).
        min_rows: Fewest training rows accepted (from the server settings).
        predict_features: Rows to predict with the fitted model (analyze), same columns as ``features``.

    Returns:
        The fitted model (for a caller that stores it) and the reply (``model`` unset).

    Raises:
        InvalidInputError: any input the module docstring's policy refuses.
    """
    matrix = matrix_from_payload(request.features, min_rows=1, field="features")
    split = prepare(request, matrix, min_rows)
    notes: list[str] = []
    n_train = split.n_train
    constant = [c for c, s in zip(matrix.columns, np.ptp(split.x[:n_train], axis=0), strict=True) if not s > 0.0]
    if constant:
        notes.append(f"constant feature columns over the training rows carry no information: {constant}")
    model = SupervisedModel(**request.model_dump(include=set(_MODEL_PARAMS))).fit(
        split.x[:n_train], split.y[:n_train], feature_names=matrix.columns, classes=split.classes)
    notes.extend(model.warnings_)
    estimator = model.estimator_

    n_test = split.x.shape[0] - n_train
    metrics: dict[str, float] = {}
    baseline: dict[str, float] = {}
    if n_test == 0:
        notes.append("test_fraction is 0: no holdout, so no metrics; importance uses the training rows")
    else:
        x_test, y_test = split.x[n_train:], split.y[n_train:]
        if split.classes is None:
            metrics = regression_metrics(y_test.astype(np.float64), np.asarray(estimator.predict(x_test),
                                                                               dtype=np.float64), notes)
        else:
            unseen = sorted({str(v) for v, c in zip(request.target[n_train:], y_test, strict=True) if c < 0})
            if unseen:
                notes.append(f"holdout labels never seen in training count as errors: {unseen}")
            metrics = classification_metrics(
                y_test.astype(np.int64), np.asarray(estimator.predict(x_test), dtype=np.int64),
                model.predict_proba(x_test), len(split.classes), notes)
        baseline = baseline_metrics(request.task, split.y[:n_train], y_test, len(split.classes or ()), notes)
    kind, (importance, importance_std) = _importance(model, request, split, notes)

    predictions = None
    if predict_features is not None:
        new = matrix_from_payload(predict_features, min_rows=1, field="predict_features")
        model.check_columns(new.columns, "predict_features")
        check_magnitude(new.values, "predict_features.values")
        predictions = model.predict(new.values)
    names = matrix.row_names()
    response = SupervisedFitResponse(
        model_id=None, model_version=None, method_used=request.method, fallback=False,
        data_hash=_data_hash(matrix, request.target), seed=request.seed, as_of=matrix.as_of,
        task=request.task, method=request.method, feature_names=matrix.columns, classes=split.classes,
        n_train=n_train, n_test=n_test, test_start=names[n_train] if n_test else None,
        metrics=metrics, baseline_metrics=baseline, feature_importance=importance, importance_method=kind,
        importance_std=importance_std, warnings=notes, predictions=predictions,
    )
    return model, response
