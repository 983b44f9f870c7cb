"""Holdout metrics, naive baselines and feature importance of the supervised family.

Every function returns finite floats only: a metric that cannot be computed (``r2`` on a
constant holdout target, ``log_loss`` when the holdout holds a class the model never saw) is
left out and the reason appended to the caller's ``warnings`` list.

Classification targets arrive here as integer codes: ``0..k-1`` for the classes seen in
training (the model's classes), ``-1`` for a holdout label never seen in training.
"""

from __future__ import annotations

import warnings as _warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.inspection import permutation_importance
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    r2_score,
    root_mean_squared_error,
)

__all__ = [
    "PERMUTATION_REPEATS",
    "Importance",
    "baseline_metrics",
    "classification_metrics",
    "impurity_importance",
    "permutation_importance_of",
    "regression_metrics",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

PERMUTATION_REPEATS = 5

Importance = tuple[dict[str, float], dict[str, float] | None]
"""Importance per feature, and its standard deviation over permutation repeats (None for impurity)."""


def _put(out: dict[str, float], name: str, compute: Callable[[], Any], notes: list[str], label: str) -> None:
    """Store ``compute()`` under ``name`` when it is a finite number; else note why it is left out."""
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # e.g. "y_pred contains classes not in y_true": the value is still right
        try:
            value = float(compute())
        except ValueError as exc:
            notes.append(f"{label}{name} left out: {exc}")
            return
    if np.isfinite(value):
        out[name] = value
    else:
        notes.append(f"{label}{name} left out: it is not a finite number on this holdout")


def regression_metrics(y_true: FloatArray, y_pred: FloatArray, notes: list[str], label: str = "") -> dict[str, float]:
    """``r2``, ``mae`` and ``rmse`` of predictions on the holdout."""
    out: dict[str, float] = {}
    if np.ptp(y_true) > 0.0:
        _put(out, "r2", lambda: r2_score(y_true, y_pred), notes, label)
    else:
        notes.append(f"{label}r2 left out: the holdout target is constant, so r2 is undefined")
    _put(out, "mae", lambda: mean_absolute_error(y_true, y_pred), notes, label)
    _put(out, "rmse", lambda: root_mean_squared_error(y_true, y_pred), notes, label)
    return out


def classification_metrics(
    y_true: IntArray, y_pred: IntArray, proba: FloatArray | None, n_classes: int, notes: list[str], label: str = "",
) -> dict[str, float]:
    """``accuracy``, ``balanced_accuracy``, ``f1_macro`` and, with probabilities, ``log_loss``."""
    out: dict[str, float] = {}
    _put(out, "accuracy", lambda: accuracy_score(y_true, y_pred), notes, label)
    _put(out, "balanced_accuracy", lambda: balanced_accuracy_score(y_true, y_pred), notes, label)
    _put(out, "f1_macro", lambda: f1_score(y_true, y_pred, average="macro", zero_division=0.0), notes, label)
    if proba is not None:
        if (y_true < 0).any():
            notes.append(f"{label}log_loss left out: the holdout holds classes never seen in training")
        else:
            _put(out, "log_loss", lambda: log_loss(y_true, proba, labels=np.arange(n_classes)), notes, label)
    return out


def baseline_metrics(
    task: str, y_train: FloatArray | IntArray, y_test: FloatArray | IntArray, n_classes: int, notes: list[str],
) -> dict[str, float]:
    """The metrics of a naive model on the holdout.

    Regression: the training mean for every row. Classification: the training class
    frequencies as probabilities, hence the majority class (lowest code on a tie) as prediction.
    """
    label = "baseline "
    if task == "regression":
        pred = np.full(y_test.shape[0], float(np.mean(y_train)))
        return regression_metrics(np.asarray(y_test, dtype=np.float64), pred, notes, label)
    counts = np.bincount(np.asarray(y_train, dtype=np.int64), minlength=n_classes).astype(np.float64)
    prior = counts / counts.sum()
    majority = np.full(y_test.shape[0], int(np.argmax(counts)), dtype=np.int64)
    proba = np.tile(prior, (y_test.shape[0], 1))
    return classification_metrics(np.asarray(y_test, dtype=np.int64), majority, proba, n_classes, notes, label)


def impurity_importance(estimator: Any, names: list[str]) -> Importance:
    """Mean decrease in impurity of a fitted forest or boosting model (sums to 1, or all 0)."""
    values = np.nan_to_num(np.asarray(estimator.feature_importances_, dtype=np.float64))
    return {n: float(v) for n, v in zip(names, values, strict=True)}, None


def permutation_importance_of(
    estimator: Any, x: FloatArray, y: FloatArray | IntArray, names: list[str], seed: int, notes: list[str],
) -> Importance:
    """Mean and standard deviation of the score drop when each column is shuffled.

    The score is the estimator's own (``r2`` for regressors, accuracy for classifiers), over
    :data:`PERMUTATION_REPEATS` seeded shuffles.
    """
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        result = permutation_importance(estimator, x, y, n_repeats=PERMUTATION_REPEATS, random_state=seed)
    mean = np.asarray(result.importances_mean, dtype=np.float64)
    std = np.asarray(result.importances_std, dtype=np.float64)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        notes.append("some permutation importances were not finite numbers and are reported as 0")
        mean, std = np.nan_to_num(mean, nan=0.0, posinf=0.0, neginf=0.0), np.nan_to_num(std, nan=0.0)
    return ({n: float(v) for n, v in zip(names, mean, strict=True)},
            {n: float(v) for n, v in zip(names, std, strict=True)})
