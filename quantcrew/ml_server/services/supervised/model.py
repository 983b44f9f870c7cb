"""The supervised model: a scikit-learn estimator on a feature table, with its columns and classes.

:class:`SupervisedModel` follows scikit-learn's estimator contract and is the supervised family's
model adapter: the fitted estimator goes to the registry through skops, its columns and classes
in the metadata. The estimators, their settings and the data policy are described in
:mod:`quantcrew.ml_server.services.supervised.service`.
"""

from __future__ import annotations

import warnings as _warnings
from collections.abc import Sequence
from typing import Any, ClassVar, cast

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
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.services.adapter import Artifact, NotFittedError
from quantcrew.ml_server.services.matrix import check_columns

__all__ = ["Labels", "SupervisedModel"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Labels = list[str] | list[float]

_GB_DEFAULT_DEPTH = 3
_METADATA_FORMAT = 1
_CONFIG = ("task", "method", "n_estimators", "max_depth", "learning_rate", "hidden_layer_sizes", "max_iter", "seed")


class SupervisedModel:
    """A supervised estimator following scikit-learn's estimator contract; the supervised model adapter.

    Args:
        task: ``"regression"`` or ``"classification"``.
        method: ``"random_forest"``, ``"gradient_boosting"`` or ``"mlp"``.
        n_estimators: Trees (random_forest) or boosting stages (gradient_boosting).
        max_depth: Tree depth limit; None: unlimited for random_forest, 3 for gradient_boosting.
        learning_rate: Shrinkage of gradient_boosting; initial Adam step of the mlp.
        hidden_layer_sizes: Units per hidden layer of the mlp.
        max_iter: Epoch cap of the mlp.
        seed: ``random_state`` of the estimator.

    Attributes (learned by :meth:`fit`):
        estimator_: The fitted scikit-learn estimator (classifiers predict class codes).
        feature_names_: Columns it expects, in order.
        classes_: Class labels by code (classification), else None.
        warnings_: Fit notes (an mlp that hit ``max_iter``).
    """

    family: ClassVar[str] = "supervised"

    def __init__(
        self,
        *,
        task: str = "regression",
        method: str = "random_forest",
        n_estimators: int = 200,
        max_depth: int | None = None,
        learning_rate: float = 0.05,
        hidden_layer_sizes: Sequence[int] = (32, 16),
        max_iter: int = 500,
        seed: int = 0,
    ) -> None:
        self.task = task
        self.method = method
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.hidden_layer_sizes = tuple(hidden_layer_sizes)
        self.max_iter = max_iter
        self.seed = seed

    def fit(self, x: FloatArray, y: FloatArray | IntArray, *, feature_names: Sequence[str],
            classes: Labels | None = None) -> SupervisedModel:
        """Fit the estimator on rows ``x`` and targets ``y`` (class codes ``0..k-1`` for classification).

        Args:
            x: Training rows.
            y: Their targets.
            feature_names: The columns of ``x``.
            classes: Class labels by code (classification), else None.

        Raises:
            InvalidInputError: scikit-learn refused the rows.
        """
        estimator = self._estimator()
        notes: list[str] = []
        with _warnings.catch_warnings(record=True) as caught:
            _warnings.simplefilter("always", ConvergenceWarning)
            try:
                estimator.fit(x, y)
            except ValueError as exc:
                raise _invalid(f"the {self.method} model could not be fitted on these rows: {exc}",
                               "features") from exc
        if any(issubclass(w.category, ConvergenceWarning) for w in caught):
            notes.append(f"the mlp did not converge within max_iter={self.max_iter} epochs; the last weights are "
                         "used (raise max_iter, or lower learning_rate)")
        self.estimator_ = estimator
        self.feature_names_ = list(feature_names)
        self.classes_ = classes
        self.warnings_ = notes
        return self

    def _estimator(self) -> Any:
        classify = self.task == "classification"
        seed = self.seed
        if self.method == "random_forest":
            forest = RandomForestClassifier if classify else RandomForestRegressor
            return forest(n_estimators=self.n_estimators, max_depth=self.max_depth, random_state=seed)
        if self.method == "gradient_boosting":
            boost = GradientBoostingClassifier if classify else GradientBoostingRegressor
            return boost(n_estimators=self.n_estimators, learning_rate=self.learning_rate,
                         max_depth=self.max_depth or _GB_DEFAULT_DEPTH, random_state=seed)
        mlp_cls = MLPClassifier if classify else MLPRegressor
        mlp = mlp_cls(hidden_layer_sizes=self.hidden_layer_sizes, learning_rate_init=self.learning_rate,
                      max_iter=self.max_iter, random_state=seed)
        pipeline = Pipeline([("scale", StandardScaler()), ("mlp", mlp)])
        if classify:
            return pipeline
        return TransformedTargetRegressor(regressor=pipeline, transformer=StandardScaler())

    def _check_fitted(self) -> None:
        if not hasattr(self, "estimator_"):
            raise NotFittedError("this SupervisedModel is not fitted yet: call fit(x, y) or rebuild a stored one")

    def check_columns(self, columns: list[str], field: str) -> None:
        """Refuse a table whose columns differ from the model's by name or order (422 listing the difference)."""
        self._check_fitted()
        check_columns(self.feature_names_, columns, field=field)

    def _call(self, name: str, x: FloatArray) -> Any:
        try:
            return getattr(self.estimator_, name)(x)
        except ValueError as exc:  # scikit-learn's input checks
            raise _invalid(f"the model cannot {name.replace('_', ' ')} these rows: {exc}", "features") from exc

    def predict(self, x: FloatArray) -> list[float] | list[str]:
        """Predictions of rows ``x``: numbers (regression) or class labels.

        Raises:
            InvalidInputError: a prediction is not finite (features far outside the training range).
            NotFittedError: the model is not fitted.
        """
        self._check_fitted()
        raw = np.asarray(self._call("predict", x))
        if self.classes_ is None:
            values = raw.astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise InvalidInputError(
                    f"predictions of rows {bad[:10].tolist()} are not finite numbers: their features are far "
                    "outside the training range",
                    details=[{"loc": ["features", "values", int(bad[0])], "msg": "prediction not finite"}],
                )
            out: list[float] = values.tolist()
            return out
        return cast(Labels, [self.classes_[int(c)] for c in raw])

    def predict_proba(self, x: FloatArray) -> FloatArray | None:
        """Class probabilities in ``classes_`` order, or None for regression."""
        self._check_fitted()
        if self.classes_ is None:
            return None
        proba = np.asarray(self._call("predict_proba", x), dtype=np.float64)
        return np.nan_to_num(proba, nan=0.0, posinf=1.0, neginf=0.0)

    # ---------------------------------------------------------- persistence
    def metadata(self) -> dict[str, Any]:
        """What :meth:`from_parts` needs besides the estimator (JSON-able)."""
        self._check_fitted()
        return {"format": _METADATA_FORMAT, "task": self.task, "method": self.method,
                "feature_names": list(self.feature_names_), "classes": self.classes_}

    def to_artifact(self) -> Artifact:
        """The fitted estimator through skops; its columns and classes in the metadata."""
        metadata = self.metadata()  # first: a model that is not fitted has no estimator
        return Artifact(obj=self.estimator_, fmt="skops", method=self.method, metadata=metadata)

    @classmethod
    def from_artifact(cls, obj: Any, info: ModelInfo, **context: Any) -> SupervisedModel:
        """The fitted model again, from its verified estimator and registry entry.

        Raises:
            ValueError, KeyError, TypeError: the entry does not describe this estimator (a 409 on rebuild).
        """
        return cls.from_parts(obj, info.metadata)

    @classmethod
    def from_parts(cls, estimator: Any, metadata: dict[str, Any]) -> SupervisedModel:
        """Rebuild from a stored estimator and :meth:`metadata` output (plus the fit's ``params``, if any).

        Raises:
            ValueError: another metadata format, or an estimator that does not match it.
        """
        if metadata.get("format") != _METADATA_FORMAT:
            raise ValueError(f"unsupported supervised metadata format {metadata.get('format')!r}")
        names = list(metadata["feature_names"])
        if int(getattr(estimator, "n_features_in_", -1)) != len(names):
            raise ValueError(f"the stored estimator does not expect the {len(names)} features its metadata names")
        params = metadata.get("params") or {}
        config = {k: params[k] for k in _CONFIG if k in params}
        config.update(task=metadata["task"], method=metadata["method"])
        model = cls(**config)
        model.estimator_ = estimator
        model.feature_names_ = names
        model.classes_ = metadata["classes"]
        model.warnings_ = []
        return model


def _invalid(message: str, *loc: str | int) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": [*loc], "msg": message}])
