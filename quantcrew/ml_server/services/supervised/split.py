"""The supervised family's training table: targets checked and encoded, rows split chronologically."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.common import MAX_ABS_VALUE
from quantcrew.ml_server.schemas.supervised import SupervisedRequestBase
from quantcrew.ml_server.services.matrix import Matrix
from quantcrew.ml_server.services.supervised.model import Labels

__all__ = ["MAX_ABS_VALUE", "MAX_CLASSES", "MIN_HOLDOUT", "Split", "check_magnitude", "prepare"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MIN_HOLDOUT = 5
"""Fewest holdout rows accepted when test_fraction > 0."""
MAX_CLASSES = 100
"""Most classes accepted (more usually means a numeric target sent as a classification)."""


@dataclass(frozen=True)
class Split:
    """The prepared data: the first ``n_train`` rows train, the rest are the holdout.

    Attributes:
        x: Every row's features.
        y: Every row's target (class codes for classification; -1 for a class unseen in training).
        n_train: Number of training rows.
        classes: Class labels by code (classification), else None.
    """

    x: FloatArray
    y: FloatArray | IntArray
    n_train: int
    classes: Labels | None


def _invalid(message: str, *loc: str | int) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": [*loc], "msg": message}])


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


def prepare(request: SupervisedRequestBase, matrix: Matrix, min_rows: int) -> Split:
    """Check the target and the split (see the service's docstring) and encode classes.

    Raises:
        InvalidInputError: any input the supervised family's data policy refuses.
    """
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
        return Split(matrix.values, np.asarray(target, dtype=np.float64), n_train, None)
    return _encode_classes(matrix.values, target, n_train, strings)


def _encode_classes(x: FloatArray, target: list[float] | list[str], n_train: int, strings: bool) -> Split:
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
    return Split(x, codes, n_train, classes)
