"""Summaries of MC-dropout draws: mean, spread and an equal-tailed interval per row (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Summary", "summarize"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Summary:
    """Mean, std (population, over draws) and an equal-tailed interval per row, each ``(B,)``."""

    mean: FloatArray
    std: FloatArray
    lower: FloatArray
    upper: FloatArray


def summarize(samples: npt.ArrayLike, level: float = 0.9) -> Summary:
    """Summarise draws over axis 0: mean, std (ddof 0) and the ``level`` equal-tailed quantile interval.

    Quantiles use numpy's default linear interpolation.

    Raises:
        ValueError: ``level`` outside ``(0, 1)``, or no draws.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    a = np.asarray(samples, dtype=np.float64)
    if a.ndim == 0 or a.shape[0] == 0:
        raise ValueError(f"samples must have at least one draw along axis 0, got shape {a.shape}")
    tail = (1.0 - level) / 2.0
    lower, upper = np.quantile(a, [tail, 1.0 - tail], axis=0)
    return Summary(mean=a.mean(axis=0), std=a.std(axis=0), lower=lower, upper=upper)
