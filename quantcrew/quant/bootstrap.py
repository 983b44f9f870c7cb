"""Paired circular block bootstrap of a Sharpe-ratio difference (numpy only).

Two return series observed on the same bars (a strategy and its baseline) are resampled
together: each bootstrap sample draws ``ceil(n / block)`` blocks of ``block`` consecutive bar
indices, each block starting at a uniformly drawn bar and wrapping around the end of the
series (Politis and Romano's circular block bootstrap), and takes the same indices from both
series. Keeping blocks keeps the serial dependence of daily returns (volatility clusters);
pairing keeps their cross dependence, so the interval is that of the DIFFERENCE, narrower than
two separate intervals would suggest.

The Sharpe ratio is :func:`quantcrew.quant.performance.sharpe_ratio`'s: annualised
``mean / std(ddof=1) * sqrt(periods_per_year)``, 0 for a series that does not move.

The interval is the percentile interval of the bootstrap differences at ``level``. When the
bootstrap distribution lies wholly on one side of the point difference (a heavily skewed
sample can do that), the interval is widened to reach the point: the interval reported always
contains the difference it is reported beside.

Reference:
    D. N. Politis and J. P. Romano, "A Circular Block-Resampling Procedure for Stationary
    Data", in Exploring the Limits of Bootstrap, Wiley, 1992.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from quantcrew.quant.performance import MIN_STD, sharpe_ratio

__all__ = ["block_bootstrap_sharpe_diff"]

FloatArray = npt.NDArray[np.float64]

_CHUNK = 256  # bootstrap samples computed at once (bounds the index matrix's memory)


def block_bootstrap_sharpe_diff(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    block: int = 20,
    n_boot: int = 2000,
    level: float = 0.90,
    seed: int = 0,
    periods_per_year: int = 252,
) -> tuple[float, float, float]:
    """``Sharpe(a) - Sharpe(b)`` and its paired circular block-bootstrap interval.

    Args:
        a: Per-bar returns of the strategy, 1-D, finite.
        b: Per-bar returns of the baseline on the same bars (same shape as ``a``).
        block: Bars per resampled block (capped at the series length).
        n_boot: Bootstrap samples.
        level: Coverage of the two-sided percentile interval, in (0, 1).
        seed: Seeds the block starts: the same inputs and seed give the same interval.
        periods_per_year: Bars per year, to annualise the Sharpe ratios.

    Returns:
        ``(diff, lo, hi)``: the point difference on the series as given, and the interval's
        bounds, with ``lo <= diff <= hi``; all finite.

    Raises:
        ValueError: ``a`` and ``b`` are not 1-D of one length of at least 2, hold a non-finite
            value, or a parameter is out of range.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.shape[0] < 2:
        raise ValueError(f"a and b must be 1-D of one length of at least 2, got shapes {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("a and b must be finite")
    if int(block) < 1 or int(n_boot) < 1 or int(periods_per_year) < 1:
        raise ValueError(f"block, n_boot and periods_per_year must be positive, got {block}, {n_boot}, "
                         f"{periods_per_year}")
    if not (math.isfinite(level) and 0.0 < level < 1.0):
        raise ValueError(f"level must lie in (0, 1), got {level}")
    ppy = int(periods_per_year)
    diff = sharpe_ratio(x, ppy) - sharpe_ratio(y, ppy)
    n = x.shape[0]
    size = min(int(block), n)
    blocks = -(-n // size)  # ceil
    offsets = np.arange(size)
    rng = np.random.default_rng(seed)
    draws = np.empty(int(n_boot))
    for first in range(0, int(n_boot), _CHUNK):
        count = min(_CHUNK, int(n_boot) - first)
        starts = rng.integers(0, n, size=(count, blocks))
        idx = ((starts[:, :, None] + offsets[None, None, :]) % n).reshape(count, blocks * size)[:, :n]
        draws[first:first + count] = _sharpes(x[idx], ppy) - _sharpes(y[idx], ppy)
    tail = (1.0 - level) / 2.0
    lo, hi = (float(v) for v in np.quantile(draws, [tail, 1.0 - tail]))
    return float(diff), min(lo, diff), max(hi, diff)


def _sharpes(rows: FloatArray, ppy: int) -> FloatArray:
    """Annualised Sharpe ratio of each row, 0 where the row does not move (as ``sharpe_ratio``)."""
    std = rows.std(axis=1, ddof=1)
    moving = std > MIN_STD
    out = np.zeros(rows.shape[0])
    out[moving] = rows.mean(axis=1)[moving] / std[moving] * math.sqrt(ppy)
    return out
