"""Supervised models on a feature table: RandomForest, GradientBoosting or an MLP, regression or classification.

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

Input policy (422 unless said otherwise): target length must equal the rows; regression needs
numeric targets; at least ``min_rows`` TRAINING rows; a holdout, when asked for, of at least
:data:`MIN_HOLDOUT` rows (fewer would give meaningless metrics: raise ``test_fraction``, send
more rows, or set it to 0); at least 2 and at most :data:`MAX_CLASSES` classes in the training
rows; no feature or numeric target beyond :data:`MAX_ABS_VALUE` in magnitude. Constant feature
columns are allowed (trees never split on them) and named in ``warnings``.

Metrics, baselines and importance: :mod:`quantcrew.ml_server.services.supervised_evaluation`.
"""

from __future__ import annotations

import hashlib
import math
import warnings as _warnings
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.schemas.supervised import (
    ImportanceKind,
    SupervisedFitResponse,
    SupervisedPredictResponse,
    SupervisedRequestBase,
)
from quantcrew.ml_server.services.matrix import Matrix, check_columns, matrix_from_payload
from quantcrew.ml_server.services.supervised_evaluation import (
    Importance,
    baseline_metrics,
    classification_metrics,
    impurity_importance,
    permutation_importance_of,
    regression_metrics,
)

__all__ = ["MAX_ABS_VALUE", "MAX_CLASSES", "MIN_HOLDOUT", "SupervisedModel", "check_magnitude", "evaluate"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_HOLDOUT = 5
"""Fewest holdout rows accepted when test_fraction > 0."""
MAX_CLASSES = 100
"""Most classes accepted (more usually means a numeric target sent as a classification)."""
MAX_ABS_VALUE = 1e30
"""Largest magnitude accepted in features and numeric targets (trees work in float32, up to ~3.4e38)."""
_GB_DEFAULT_DEPTH = 3
_METADATA_FORMAT = 1

Labels = list[str] | list[float]


@dataclass(frozen=True)
class _Split:
    """The prepared data: the first ``n_train`` rows train, the rest are the holdout."""

    x: FloatArray
    y: FloatArray | IntArray
    n_train: int
    classes: Labels | None


class SupervisedModel:
    """A fitted estimator plus what is needed to read its answers (feature names, classes).

    Args:
        task: ``"regression"`` or ``"classification"``.
        method: ``"random_forest"``, ``"gradient_boosting"`` or ``"mlp"``.
        estimator: The fitted scikit-learn estimator (classifiers predict class codes).
        feature_names: Columns it expects, in order.
        classes: Class labels by code (classification), else None.
    """

    def __init__(self, task: str, method: str, estimator: Any, feature_names: list[str],
                 classes: Labels | None) -> None:
        self.task = task
        self.method = method
        self.estimator = estimator
        self.feature_names = list(feature_names)
        self.classes = classes

    def metadata(self) -> dict[str, Any]:
        """What :meth:`from_parts` needs besides the estimator (JSON-able)."""
        return {"format": _METADATA_FORMAT, "task": self.task, "method": self.method,
                "feature_names": list(self.feature_names), "classes": self.classes}

    @classmethod
    def from_parts(cls, estimator: Any, metadata: dict[str, Any]) -> SupervisedModel:
        """Rebuild from a stored estimator and :meth:`metadata` output.

        Raises:
            ValueError: another metadata format, or an estimator that does not match it.
        """
        if metadata.get("format") != _METADATA_FORMAT:
            raise ValueError(f"unsupported supervised metadata format {metadata.get('format')!r}")
        names = list(metadata["feature_names"])
        if int(getattr(estimator, "n_features_in_", -1)) != len(names):
            raise ValueError(f"the stored estimator does not expect the {len(names)} features its metadata names")
        return cls(metadata["task"], metadata["method"], estimator, names, metadata["classes"])

    def check_columns(self, columns: list[str], field: str) -> None:
        """Refuse a table whose columns differ from the model's by name or order (422 listing the difference)."""
        check_columns(self.feature_names, columns, field=field)

    def _call(self, name: str, x: FloatArray) -> Any:
        try:
            return getattr(self.estimator, name)(x)
        except ValueError as exc:  # scikit-learn's input checks
            raise _invalid(f"the model cannot {name.replace('_', ' ')} these rows: {exc}", "features") from exc

    def predict(self, x: FloatArray) -> list[float] | list[str]:
        """Predictions of rows ``x``: numbers (regression) or class labels.

        Raises:
            InvalidInputError: a prediction is not finite (features far outside the training range).
        """
        raw = np.asarray(self._call("predict", x))
        if self.classes is None:
            values = raw.astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise InvalidInputError(
                    f"predictions of rows {bad[:10].tolist()} are not finite numbers: their features are far "
                    "outside the training range",
                    details=[{"loc": ["body", "features", "values", int(bad[0])], "msg": "prediction not finite"}],
                )
            out: list[float] = values.tolist()
            return out
        return cast(Labels, [self.classes[int(c)] for c in raw])

    def predict_proba(self, x: FloatArray) -> FloatArray | None:
        """Class probabilities in ``classes`` order, or None for regression."""
        if self.classes is None:
            return None
        proba = np.asarray(self._call("predict_proba", x), dtype=np.float64)
        return np.nan_to_num(proba, nan=0.0, posinf=1.0, neginf=0.0)

    def predict_response(self, matrix: Matrix, *, include_probabilities: bool, model_id: str | None,
                         model_version: int | None, seed: int | None) -> SupervisedPredictResponse:
        """Predict the rows of ``matrix`` and package the answer with its provenance."""
        self.check_columns(matrix.columns, "features")
        check_magnitude(matrix.values, "features.values")
        proba = self.predict_proba(matrix.values) if include_probabilities else None
        return SupervisedPredictResponse(
            model_id=model_id, model_version=model_version, method_used=self.method, fallback=False,
            data_hash=matrix.data_hash, seed=seed, as_of=matrix.as_of,
            predictions=self.predict(matrix.values),
            probabilities=None if proba is None else proba.tolist(),
            classes=self.classes,
        )


def _invalid(message: str, *loc: str | int) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": ["body", *loc], "msg": message}])


def check_magnitude(values: npt.ArrayLike, field: str) -> None:
    """Refuse values beyond :data:`MAX_ABS_VALUE` (422 naming the first one): rescale such a column.

    Raises:
        InvalidInputError: a value's magnitude exceeds the limit.
    """
    arr = np.asarray(values, dtype=np.float64)
    big = np.abs(arr) > MAX_ABS_VALUE
    if big.any():
        where = [int(i) for i in np.argwhere(big)[0]]
        path = field + "".join(f"[{i}]" for i in where)
        raise _invalid(f"{path} = {arr[tuple(where)]:g} exceeds {MAX_ABS_VALUE:g} in magnitude: rescale it",
                       *field.split("."), *where)


def _prepare(request: SupervisedRequestBase, matrix: Matrix, min_rows: int) -> _Split:
    """Check the target and the split (see the module docstring) and encode classes."""
    n = matrix.n_rows
    target = request.target
    if len(target) != n:
        raise _invalid(f"target has {len(target)} values but features has {n} rows; they must be equal", "target")
    strings = bool(target) and isinstance(target[0], str)
    if request.task == "regression" and strings:
        raise _invalid("target holds strings but task is 'regression': send numbers, or use task='classification'",
                       "target")
    if n < min_rows:
        raise _invalid(f"features has {n} rows; at least {min_rows} training rows are needed", "features", "values")
    n_test = math.floor(n * request.test_fraction + 1e-9)
    if request.test_fraction > 0.0 and n_test < MIN_HOLDOUT:
        raise _invalid(
            f"test_fraction {request.test_fraction} of {n} rows leaves a holdout of {n_test} rows; metrics need at "
            f"least {MIN_HOLDOUT}: raise test_fraction, send more rows, or set test_fraction to 0 (no metrics)",
            "test_fraction",
        )
    n_train = n - n_test
    if n_train < min_rows:
        raise _invalid(
            f"features has {n} rows, of which the first {n_train} train the model (test_fraction "
            f"{request.test_fraction}); at least {min_rows} training rows are needed",
            "features", "values",
        )
    check_magnitude(matrix.values, "features.values")
    if request.task == "regression":
        check_magnitude(target, "target")
        return _Split(matrix.values, np.asarray(target, dtype=np.float64), n_train, None)
    return _encode_classes(matrix.values, target, n_train, strings)


def _encode_classes(x: FloatArray, target: list[float] | list[str], n_train: int, strings: bool) -> _Split:
    labels = np.asarray(target, dtype=object if strings else np.float64)
    train_classes = sorted(set(labels[:n_train].tolist()))
    if len(train_classes) < 2:
        raise _invalid(
            f"classification needs at least 2 classes in the training rows (the first {n_train}); they hold only "
            f"{train_classes}", "target",
        )
    if len(train_classes) > MAX_CLASSES:
        raise _invalid(
            f"the training rows hold {len(train_classes)} classes; at most {MAX_CLASSES} are supported (is this a "
            "numeric target meant for task='regression'?)", "target",
        )
    index = {c: i for i, c in enumerate(train_classes)}
    codes = np.array([index.get(c, -1) for c in labels.tolist()], dtype=np.int64)
    classes: Labels = [str(c) for c in train_classes] if strings else [float(c) for c in train_classes]
    return _Split(x, codes, n_train, classes)


def _estimator(request: SupervisedRequestBase) -> Any:
    classify = request.task == "classification"
    seed = request.seed
    if request.method == "random_forest":
        forest = RandomForestClassifier if classify else RandomForestRegressor
        return forest(n_estimators=request.n_estimators, max_depth=request.max_depth, random_state=seed)
    if request.method == "gradient_boosting":
        boost = GradientBoostingClassifier if classify else GradientBoostingRegressor
        return boost(n_estimators=request.n_estimators, learning_rate=request.learning_rate,
                     max_depth=request.max_depth or _GB_DEFAULT_DEPTH, random_state=seed)
    mlp_cls = MLPClassifier if classify else MLPRegressor
    mlp = mlp_cls(hidden_layer_sizes=tuple(request.hidden_layer_sizes), learning_rate_init=request.learning_rate,
                  max_iter=request.max_iter, random_state=seed)
    pipeline = Pipeline([("scale", StandardScaler()), ("mlp", mlp)])
    if classify:
        return pipeline
    return TransformedTargetRegressor(regressor=pipeline, transformer=StandardScaler())


def _fit(estimator: Any, x: FloatArray, y: FloatArray | IntArray, request: SupervisedRequestBase,
         notes: list[str]) -> None:
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always", ConvergenceWarning)
        try:
            estimator.fit(x, y)
        except ValueError as exc:
            raise _invalid(f"the {request.method} model could not be fitted on these rows: {exc}", "features") from exc
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append(f"the mlp did not converge within max_iter={request.max_iter} epochs; the last weights are "
                     "used (raise max_iter, or lower learning_rate)")


def _data_hash(matrix: Matrix, target: list[float] | list[str]) -> str:
    digest = hashlib.sha256(matrix.data_hash.encode())
    if target and isinstance(target[0], str):
        digest.update("\x1f".join(str(t) for t in target).encode())
    else:
        digest.update(np.asarray(target, dtype=np.float64).tobytes())
    return "sha256:" + digest.hexdigest()


def _importance(model: SupervisedModel, request: SupervisedRequestBase, split: _Split,
                notes: list[str]) -> tuple[ImportanceKind, Importance]:
    kind: ImportanceKind
    if request.importance == "auto":
        kind = "permutation" if request.method == "mlp" else "impurity"
    else:
        kind = request.importance
    if kind == "impurity":
        return kind, impurity_importance(model.estimator, model.feature_names)
    start = split.n_train if split.n_train < split.x.shape[0] else 0
    y_eval = split.y[start:]
    keep = np.asarray(y_eval >= 0) if model.classes is not None else np.ones(y_eval.shape[0], dtype=bool)
    return kind, permutation_importance_of(model.estimator, split.x[start:][keep], y_eval[keep],
                                           model.feature_names, request.seed, notes)


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
    split = _prepare(request, matrix, min_rows)
    notes: list[str] = []
    n_train = split.n_train
    constant = [c for c, s in zip(matrix.columns, np.ptp(split.x[:n_train], axis=0), strict=True) if not s > 0.0]
    if constant:
        notes.append(f"constant feature columns over the training rows carry no information: {constant}")
    estimator = _estimator(request)
    _fit(estimator, split.x[:n_train], split.y[:n_train], request, notes)
    model = SupervisedModel(request.task, request.method, estimator, matrix.columns, split.classes)

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
