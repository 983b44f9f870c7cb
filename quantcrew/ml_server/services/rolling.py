"""Trailing-window sums that give row ``t`` the same bits whatever comes after it."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["window_sum"]

FloatArray = npt.NDArray[np.float64]


def window_sum(x: FloatArray, w: int, *, first: int, fill: float = 0.0) -> FloatArray:
    """Sum of ``x[t-w+1..t]`` at every ``t >= first`` (``fill`` before), as ``w`` elementwise adds.

    Elementwise adds give each row the same bits whatever the array's length, which a
    cumulative-sum difference (cancellation, on prices catastrophic) or a strided reduction
    (blocking) does not: the truncation tests of the feature builders rely on it.
    """
    n = x.shape[0]
    out = np.full(n, fill)
    if first >= n:
        return out
    acc = x[first:].copy()
    for k in range(1, w):
        acc += x[first - k : n - k]
    out[first:] = acc
    return out
