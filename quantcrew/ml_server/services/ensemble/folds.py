"""Labels and walk-forward folds for next-move classification, with purging.

Row ``t`` of a sample set is the prediction made at the close of bar ``t``: it reads the
feature rows ``t - window + 1 .. t`` and its label is the move from ``close[t]`` to
``close[t + horizon]``. A label therefore reaches ``horizon`` bars into the future, so the
last ``horizon`` rows before a test span (plus any extra ``purge``) are dropped from
training: no training label is computed from a price inside the span it is tested on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Fold", "direction_labels", "holdout_split", "walk_forward_folds"]

DOWN, FLAT, UP = 0, 1, 2


def direction_labels(close: npt.NDArray[np.float64], *, horizon: int, up: float,
                     down: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Class of the move over the next ``horizon`` bars: 0 down, 1 flat, 2 up.

    Returns:
        ``(labels, valid)``: ``valid[t]`` is False for the last ``horizon`` bars, whose move
        is not known yet (their label is set to flat and must not be used).
    """
    n = len(close)
    labels = np.full(n, FLAT, dtype=np.int64)
    valid = np.zeros(n, dtype=bool)
    if n > horizon:
        move = close[horizon:] / close[:-horizon] - 1.0
        head = labels[: n - horizon]
        head[move > up] = UP
        head[move < -down] = DOWN
        valid[: n - horizon] = True
    return labels, valid


@dataclass(frozen=True)
class Fold:
    """Row ranges of one fold, half-open: ``[train_start, train_stop)`` and ``[test_start, test_stop)``."""

    index: int
    train_start: int
    train_stop: int
    test_start: int
    test_stop: int

    @property
    def n_train(self) -> int:
        return self.train_stop - self.train_start

    @property
    def n_test(self) -> int:
        return self.test_stop - self.test_start


def walk_forward_folds(first: int, stop: int, test_start: int, *, folds: int, horizon: int, purge: int = 0,
                       scheme: str = "expanding", train_size: int | None = None,
                       min_train: int = 50) -> list[Fold]:
    """Split rows ``[test_start, stop)`` into ``folds`` consecutive test spans, each trained on earlier rows.

    Args:
        first: First usable row (enough history for features and the window).
        stop: One past the last labelled row.
        test_start: First test row.
        folds: Number of test spans (the last takes the remainder).
        horizon: Label horizon: the ``horizon + purge`` rows before each test span are dropped
            from its training rows.
        purge: Extra rows dropped beyond the horizon.
        scheme: ``expanding`` (train from ``first``) or ``rolling`` (the last ``train_size`` rows).
        train_size: Rows per rolling window.
        min_train: Fewest training rows a fold may have.

    Raises:
        ValueError: the spans do not fit (the message says which bound to move).
    """
    if scheme not in ("expanding", "rolling"):
        raise ValueError(f"scheme must be 'expanding' or 'rolling', got {scheme!r}")
    gap = horizon + purge
    n_test = stop - test_start
    if n_test < folds:
        raise ValueError(f"the test span has {n_test} labelled rows, fewer than folds={folds}")
    if test_start - gap - first < min_train:
        raise ValueError(
            f"only {max(0, test_start - gap - first)} training rows before the first test row "
            f"(need at least {min_train}): start the test span later or give more history")
    size = n_test // folds
    out: list[Fold] = []
    for k in range(folds):
        lo = test_start + k * size
        hi = stop if k == folds - 1 else lo + size
        train_stop = lo - gap
        train_start = first if scheme == "expanding" else max(first, train_stop - (train_size or train_stop))
        out.append(Fold(k, train_start, train_stop, lo, hi))
    return out


def holdout_split(start: int, stop: int, *, fraction: float, gap: int,
                  min_rows: int = 20) -> tuple[tuple[int, int], tuple[int, int]]:
    """Fit rows and a later validation tail of ``[start, stop)``, ``gap`` rows apart.

    Returns:
        ``((fit_start, fit_stop), (val_start, val_stop))``, half-open.

    Raises:
        ValueError: too few rows for both parts.
    """
    n = stop - start
    n_val = max(min_rows, int(round(n * fraction)))
    n_fit = n - n_val - gap
    if n_fit < min_rows:
        raise ValueError(f"{n} training rows cannot hold a {n_val}-row validation tail, a {gap}-row gap and "
                         f"{min_rows} rows to fit")
    return (start, start + n_fit), (stop - n_val, stop)
