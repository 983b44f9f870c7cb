"""Coverage tests of a VaR backtest: Kupiec (1995) and Christoffersen (1998).

A VaR forecast at level ``c`` should be breached (realised loss above the VaR) on a share
``p = 1 - c`` of the days, and the breaches should not cluster. Three likelihood-ratio tests
check this from the breach indicators ``I_t`` (True on a breach day):

* :func:`kupiec_pof`, unconditional coverage (proportion of failures): with ``x`` breaches in
  ``n`` days and ``p_hat = x / n``,
  ``LR_uc = -2 [ (n - x) log(1 - p) + x log p - (n - x) log(1 - p_hat) - x log p_hat ]``,
  asymptotically chi2(1) under ``H0: P(breach) = p``.
* :func:`christoffersen_independence`, independence against a first-order Markov chain: from the
  transition counts ``n_ij`` (day ``t - 1`` in state ``i``, day ``t`` in state ``j``; 1 = breach),
  ``pi_01 = n01 / (n00 + n01)``, ``pi_11 = n11 / (n10 + n11)`` and the pooled
  ``pi = (n01 + n11) / (n00 + n01 + n10 + n11)``,
  ``LR_ind = -2 [ log L(pi) - log L(pi_01, pi_11) ]``, asymptotically chi2(1) under
  ``H0: pi_01 = pi_11``.
* :func:`conditional_coverage`: ``LR_cc = LR_uc + LR_ind``, asymptotically chi2(2).

Every ``k log q`` term uses the limit ``0 log 0 = 0`` (``scipy.special.xlogy``), so zero breaches,
all breaches and empty transition cells give finite statistics, never NaN. Rounding can push
a statistic a hair below zero; it is clipped at 0.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special import xlog1py, xlogy
from scipy.stats import chi2

__all__ = [
    "CoverageTest",
    "TransitionCounts",
    "christoffersen_independence",
    "conditional_coverage",
    "kupiec_pof",
    "transition_counts",
]

BoolArray = npt.NDArray[np.bool_]


class CoverageTest(NamedTuple):
    """A likelihood-ratio statistic and its asymptotic chi-squared p-value."""

    statistic: float
    p_value: float


class TransitionCounts(NamedTuple):
    """Counts of day-to-day moves between no-breach (0) and breach (1)."""

    n00: int
    n01: int
    n10: int
    n11: int


def kupiec_pof(n_obs: int, n_breaches: int, level: float) -> CoverageTest:
    """Kupiec's proportion-of-failures test of unconditional coverage.

    Args:
        n_obs: Number of forecast days (at least 1).
        n_breaches: Days whose loss exceeded the VaR (``0 <= n_breaches <= n_obs``).
        level: VaR confidence level in (0, 1); the expected breach rate is ``1 - level``.

    Returns:
        ``(LR_uc, p_value)``, the p-value from chi2 with 1 degree of freedom.

    Raises:
        ValueError: counts or level out of range.
    """
    if n_obs < 1 or not 0 <= n_breaches <= n_obs:
        raise ValueError(f"need n_obs >= 1 and 0 <= n_breaches <= n_obs, got n_obs={n_obs}, n_breaches={n_breaches}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    p = 1.0 - level
    x, n = float(n_breaches), float(n_obs)
    p_hat = x / n
    log_null = xlog1py(n - x, -p) + xlogy(x, p)
    log_alt = xlog1py(n - x, -p_hat) + xlogy(x, p_hat)
    return _chi2_test(-2.0 * (log_null - log_alt), dof=1)


def transition_counts(breaches: npt.ArrayLike) -> TransitionCounts:
    """Transition counts ``n00, n01, n10, n11`` of a breach-indicator series.

    Args:
        breaches: Breach indicators in time order (booleans or 0/1).
    """
    hits = _as_bool(breaches)
    prev, curr = hits[:-1], hits[1:]
    return TransitionCounts(
        n00=int(np.count_nonzero(~prev & ~curr)),
        n01=int(np.count_nonzero(~prev & curr)),
        n10=int(np.count_nonzero(prev & ~curr)),
        n11=int(np.count_nonzero(prev & curr)),
    )


def christoffersen_independence(breaches: npt.ArrayLike) -> CoverageTest:
    """Christoffersen's Markov test that a breach today does not make one tomorrow likelier.

    Args:
        breaches: Breach indicators in time order (booleans or 0/1); fewer than 2 days give
            ``(0.0, 1.0)`` (no transition to test).

    Returns:
        ``(LR_ind, p_value)``, the p-value from chi2 with 1 degree of freedom.
    """
    n00, n01, n10, n11 = transition_counts(breaches)
    total = n00 + n01 + n10 + n11
    if total == 0:
        return CoverageTest(0.0, 1.0)
    pi = (n01 + n11) / total
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    log_null = xlog1py(n00 + n10, -pi) + xlogy(n01 + n11, pi)
    log_alt = xlog1py(n00, -pi01) + xlogy(n01, pi01) + xlog1py(n10, -pi11) + xlogy(n11, pi11)
    return _chi2_test(-2.0 * (log_null - log_alt), dof=1)


def conditional_coverage(breaches: npt.ArrayLike, level: float) -> CoverageTest:
    """Christoffersen's joint test of coverage and independence: ``LR_uc + LR_ind`` ~ chi2(2).

    Args:
        breaches: Breach indicators in time order (at least one day).
        level: VaR confidence level in (0, 1).

    Returns:
        ``(LR_cc, p_value)``.
    """
    hits = _as_bool(breaches)
    uc = kupiec_pof(int(hits.size), int(np.count_nonzero(hits)), level)
    ind = christoffersen_independence(hits)
    return _chi2_test(uc.statistic + ind.statistic, dof=2)


def _chi2_test(statistic: float, *, dof: int) -> CoverageTest:
    lr = max(float(statistic), 0.0)
    return CoverageTest(lr, float(chi2.sf(lr, dof)))


def _as_bool(breaches: npt.ArrayLike) -> BoolArray:
    hits = np.asarray(breaches)
    if hits.ndim != 1:
        raise ValueError(f"breaches must be one-dimensional, got shape {hits.shape}")
    if hits.dtype != np.bool_:
        if not np.isin(hits, (0, 1)).all():
            raise ValueError("breaches must hold booleans or 0/1")
        hits = hits.astype(np.bool_)
    return hits
