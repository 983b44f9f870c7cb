"""Permutation importance of a model's OUTPUT on given rows, model-agnostic.

The model is a function ``predict(matrix) -> vector`` (one output per row). A feature's
importance is how much the output moves when that feature's values are shuffled across the
rows (breaking its link with the other features and with the output): the mean absolute
change of the output, ``mean_i |f(X_perm)_i - f(X)_i|``, averaged over ``repeats`` seeded
shuffles, with the standard deviation over the repeats. No label is needed, so this explains
what the model does, not whether it is right.

A feature may span several columns (a windowed model reads the same feature at every bar of
its window): a *group* of columns is shuffled with one permutation of the rows, so the feature's
whole trace moves together. A feature constant over the rows has importance exactly 0 (shuffling
identical values changes nothing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["FeatureImportance", "Predict", "check_output", "permutation_importance", "single_groups"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Predict = Callable[[FloatArray], FloatArray]
"""A model seen from outside: rows ``(n, d)`` -> one output per row ``(n,)``."""

_MAX_BLOCK = 4_000_000
"""Most values (rows x columns) sent to ``predict`` at once: 32 MB of float64."""


@dataclass(frozen=True)
class FeatureImportance:
    """One feature's importance: the mean absolute change of the output, its std over the repeats."""

    name: str
    importance: float
    std: float


def single_groups(d: int) -> list[IntArray]:
    """One group per column: ``[[0], [1], ..., [d-1]]``."""
    return [np.array([j], dtype=np.int64) for j in range(d)]


def check_output(y: npt.ArrayLike, n: int) -> FloatArray:
    """``predict``'s answer as a float vector of ``n`` finite values.

    Raises:
        ValueError: another shape, or a value that is not finite.
    """
    out = np.asarray(y, dtype=np.float64).reshape(-1)
    if out.shape[0] != n:
        raise ValueError(f"predict returned {out.shape[0]} outputs for {n} rows")
    if not np.isfinite(out).all():
        raise ValueError("predict returned values that are not finite")
    return out


def permutation_importance(predict: Predict, x: FloatArray, names: Sequence[str], *,
                           groups: Sequence[IntArray] | None = None, repeats: int = 5,
                           seed: int = 0) -> list[FeatureImportance]:
    """Each feature's permutation importance on rows ``x``, most important first.

    Args:
        predict: The model, rows -> outputs.
        x: The rows, ``(n, d)``.
        names: One name per group (per column when ``groups`` is None).
        groups: Column indices of each feature; None: one column each.
        repeats: Shuffles per feature; the importance is their mean, ``std`` their spread.
        seed: Seeds the shuffles (the same seed gives the same answer).

    Raises:
        ValueError: fewer than 2 rows, names and groups of different lengths, fewer than 1
            repeat, or a ``predict`` answer that is not one finite value per row.

    The rows of the repeats of one feature go through ``predict`` together, in calls of at most
    ``_MAX_BLOCK`` values.
    """
    x = np.asarray(x, dtype=np.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError("permutation importance needs at least 2 rows")
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    cols = list(groups) if groups is not None else single_groups(d)
    if len(cols) != len(names):
        raise ValueError(f"{len(names)} names for {len(cols)} features")
    base = check_output(predict(x), n)
    rng = np.random.default_rng(seed)
    out: list[FeatureImportance] = []
    per_call = max(1, min(repeats, _MAX_BLOCK // max(1, n * d)))  # repeats per predict call
    for name, group in zip(names, cols, strict=True):
        perms = [rng.permutation(n) for _ in range(repeats)]
        per_repeat = np.empty(repeats, dtype=np.float64)
        for start in range(0, repeats, per_call):
            chunk = perms[start:start + per_call]
            block = np.tile(x, (len(chunk), 1))
            for r, perm in enumerate(chunk):
                block[r * n:(r + 1) * n][:, group] = x[perm][:, group]
            moved = check_output(predict(block), n * len(chunk)).reshape(len(chunk), n)
            per_repeat[start:start + len(chunk)] = np.abs(moved - base[None, :]).mean(axis=1)
        out.append(FeatureImportance(str(name), float(per_repeat.mean()), float(per_repeat.std())))
    return sorted(out, key=lambda f: -f.importance)
