"""A data-quality score of incoming OHLCV bars: gaps, stale prices, outliers, inconsistent bars.

Checks (each counted, with the first :data:`FIRST_FEW` offending timestamps):

* ``gaps``: consecutive bars more than ``max_gap_days`` calendar days apart
  (``settings.data.max_gap_days``);
* ``missing_business_days`` (daily bars only, every bar at midnight): business days (Mon-Fri)
  between consecutive bars that have no bar. A lone missing business day is usually a market
  holiday and is reported but not charged; runs of two or more are charged, one per day;
* ``stale``: bars whose close equals the previous close for the ``stale_run``-th time or more
  in a row (a feed that stopped updating), and ``zero_range`` bars (``high == low`` while the
  close moved or the open differs: a bar built from one tick);
* ``outliers``: log returns whose robust z-score ``|r - median| / (1.4826 * MAD)`` exceeds
  ``outlier_z`` (8: a daily move that a heavy-tailed market makes far less than once in
  decades). With a MAD of zero (mostly stale prices) the mean absolute deviation stands in;
* ``inconsistent``: ``high`` below ``max(open, close)``, ``low`` above ``min(open, close)``, or
  a price that is not positive and finite.

Score in [0, 1]: the share of clean bars among the bars sent plus the charged missing days,
``clean / (n + charged_missing)``; a bar is unclean when it is stale, zero-range, an outlier
(the bar that ends the return), inconsistent, or the first bar after a gap.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["FIRST_FEW", "BarQuality", "Check", "bar_quality"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

FIRST_FEW = 5
"""Offending timestamps listed per check."""

_MAD_SCALE = 1.4826
_MEAN_AD_SCALE = 1.2533


@dataclass(frozen=True)
class Check:
    """One check: how many bars (or days) it found and the first few timestamps."""

    count: int
    first: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BarQuality:
    """The quality of a batch of bars."""

    score: float
    n_bars: int
    clean_bars: int
    gaps: Check
    missing_business_days: Check
    charged_missing_days: int
    stale: Check
    zero_range: Check
    outliers: Check
    inconsistent: Check
    max_gap_days: int
    outlier_z: float
    stale_run: int


def _check(mask: BoolArray, labels: list[str]) -> Check:
    where = np.flatnonzero(mask)
    return Check(count=len(where), first=[labels[i] for i in where[:FIRST_FEW]])


def _robust_z(r: FloatArray) -> FloatArray:
    med = float(np.median(r))
    dev = np.abs(r - med)
    scale = _MAD_SCALE * float(np.median(dev))
    if scale <= 0.0:
        scale = _MEAN_AD_SCALE * float(np.mean(dev))
    if scale <= 0.0:
        return np.zeros_like(r)
    return np.asarray(dev / scale, dtype=np.float64)


def bar_quality(times: npt.NDArray[np.datetime64], open_: FloatArray, high: FloatArray, low: FloatArray,
                close: FloatArray, labels: list[str], *, max_gap_days: int, outlier_z: float = 8.0,
                stale_run: int = 3) -> BarQuality:
    """Score a batch of bars (see the module docstring).

    Args:
        times: Bar times (``datetime64``), increasing.
        open_, high, low, close: Prices.
        labels: One printable timestamp per bar (listed for offending bars).
        max_gap_days: Calendar days between bars beyond which a gap is counted.
        outlier_z: Robust z-score of a log return beyond which it is an outlier.
        stale_run: Equal closes in a row from which the bars are stale (3: the third equal close).
    """
    n = len(close)
    o, h, lo, c = (np.asarray(a, dtype=np.float64) for a in (open_, high, low, close))
    positive = np.isfinite(o) & np.isfinite(h) & np.isfinite(lo) & np.isfinite(c) & (o > 0) & (h > 0) & (lo > 0) \
        & (c > 0)
    with np.errstate(invalid="ignore"):
        inconsistent = ~positive | (h < np.maximum(o, c)) | (lo > np.minimum(o, c))

    gap_after = np.zeros(n, dtype=bool)
    missing = np.zeros(n, dtype=np.int64)
    if n > 1:
        t = np.asarray(times).astype("datetime64[us]")
        days = (t[1:] - t[:-1]) / np.timedelta64(1, "D")
        gap_after[1:] = days > max_gap_days
        daily = bool(np.array_equal(t.astype("datetime64[D]").astype("datetime64[us]"), t))
        if daily:
            d = t.astype("datetime64[D]")
            missing[1:] = np.busday_count(d[:-1] + np.timedelta64(1, "D"), d[1:])
    charged = int(missing[missing >= 2].sum())

    stale = np.zeros(n, dtype=bool)
    run = 1
    for i in range(1, n):
        run = run + 1 if c[i] == c[i - 1] else 1
        stale[i] = run >= stale_run
    zero_range = positive & (h == lo) & ((o != c) | np.concatenate([[False], c[1:] != c[:-1]]))

    outlier = np.zeros(n, dtype=bool)
    ok = positive[1:] & positive[:-1] if n > 1 else np.zeros(0, dtype=bool)
    if ok.sum() >= 3:
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.log(c[1:] / c[:-1])
        z = np.zeros(n - 1)
        z[ok] = _robust_z(r[ok])
        outlier[1:] = ok & (z > outlier_z)

    unclean = inconsistent | gap_after | stale | zero_range | outlier
    clean = int(n - unclean.sum())
    score = clean / (n + charged) if n + charged > 0 else 0.0
    return BarQuality(
        score=float(score), n_bars=n, clean_bars=clean, gaps=_check(gap_after, labels),
        missing_business_days=Check(count=int(missing.sum()),
                                    first=[labels[i] for i in np.flatnonzero(missing)[:FIRST_FEW]]),
        charged_missing_days=charged, stale=_check(stale, labels), zero_range=_check(zero_range, labels),
        outliers=_check(outlier, labels), inconsistent=_check(inconsistent, labels), max_gap_days=max_gap_days,
        outlier_z=outlier_z, stale_run=stale_run)
