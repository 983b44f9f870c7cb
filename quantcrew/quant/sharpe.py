"""Probabilistic and deflated Sharpe ratios (Bailey and Lopez de Prado).

References:
    D. H. Bailey and M. Lopez de Prado, "The Sharpe Ratio Efficient Frontier",
    Journal of Risk 15(2), 2012: the probabilistic Sharpe ratio (PSR).
    D. H. Bailey and M. Lopez de Prado, "The Deflated Sharpe Ratio: Correcting for Selection
    Bias, Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 2014.

Conventions (all functions):
    * Sharpe ratios are per observation, NOT annualised: a daily series with an annualised
      Sharpe of 2.5 over 250 days a year enters as ``2.5 / sqrt(250)``, and the variance of
      annualised trial Sharpe ratios ``v`` enters as ``v / 250``.
    * ``kurtosis`` is the plain fourth standardised moment (3 for a normal distribution),
      NOT the excess kurtosis.
    * ``n`` is the number of return observations behind ``sr``.

Zero variance: unlike the annualised ratios of :mod:`quantcrew.quant.performance` (0 for a
flat series, by convention), :func:`sharpe_moments` raises, because a probability that the
true Sharpe ratio beats a benchmark cannot be made up for a series that never moved.

Numpy and the standard library only (``statistics.NormalDist``), no scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

__all__ = [
    "EULER_GAMMA",
    "SharpeMoments",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "probabilistic_sharpe_ratio",
    "sharpe_moments",
]

EULER_GAMMA = 0.5772156649015329
"""The Euler-Mascheroni constant, used by the expected maximum of ``N`` Gaussian draws."""

_NORMAL = NormalDist()


@dataclass(frozen=True)
class SharpeMoments:
    """The sample quantities the PSR and DSR need, from one return series.

    Attributes:
        sr: Per-observation Sharpe ratio, ``mean / std`` (``ddof=1``), zero risk-free rate.
        skew: Sample skewness (biased, ``ddof=0`` moments, as in the papers).
        kurtosis: Sample kurtosis, non-excess (3 for a normal sample).
        n: Number of observations.
    """

    sr: float
    skew: float
    kurtosis: float
    n: int


def sharpe_moments(returns: npt.ArrayLike) -> SharpeMoments:
    """Per-observation Sharpe ratio, skewness and (non-excess) kurtosis of a return series.

    Args:
        returns: Simple per-period returns, 1-D, finite, at least 3 of them, not all equal.

    Returns:
        The inputs ``probabilistic_sharpe_ratio`` and ``deflated_sharpe_ratio`` take.

    Raises:
        ValueError: ``returns`` is not 1-D, has fewer than 3 values, a non-finite value, or
            zero variance.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.shape[0] < 3:
        raise ValueError(f"returns must be 1-D with at least 3 values, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns must be finite (found NaN or inf)")
    centred = r - r.mean()
    m2 = float(np.mean(centred**2))
    if m2 == 0.0 or float(np.ptp(r)) == 0.0:
        raise ValueError("returns have zero variance: the Sharpe ratio is undefined")
    sr = float(r.mean() / r.std(ddof=1))
    skew = float(np.mean(centred**3) / m2**1.5)
    kurt = float(np.mean(centred**4) / m2**2)
    return SharpeMoments(sr=sr, skew=skew, kurtosis=kurt, n=int(r.shape[0]))


def probabilistic_sharpe_ratio(sr: float, sr_benchmark: float, n: int, skew: float, kurtosis: float) -> float:
    """Probability that the true Sharpe ratio exceeds ``sr_benchmark`` (PSR, Bailey & Lopez de Prado 2012).

    ``PSR = Phi((sr - sr_benchmark) * sqrt(n - 1) / sqrt(1 - skew * sr + (kurtosis - 1) / 4 * sr**2))``.
    For normal returns (skew 0, kurtosis 3) the denominator is ``sqrt(1 + sr**2 / 2)``.

    Args:
        sr: Observed per-observation (non-annualised) Sharpe ratio.
        sr_benchmark: Benchmark Sharpe ratio ``SR*``, same frequency as ``sr``.
        n: Number of return observations (at least 2).
        skew: Skewness of the returns.
        kurtosis: Kurtosis of the returns, NOT excess (3 for normal), positive.

    Returns:
        A probability in [0, 1].

    Raises:
        ValueError: an argument is non-finite or out of range (the message names it), or the
            moments make the variance of the Sharpe estimator non-positive.
    """
    _check_finite(sr=sr, sr_benchmark=sr_benchmark, skew=skew, kurtosis=kurtosis)
    _check_count("n", n, minimum=2)
    if kurtosis <= 0:
        raise ValueError(f"kurtosis must be positive (non-excess, 3 for normal returns), got {kurtosis}")
    var_factor = 1.0 - skew * sr + (kurtosis - 1.0) / 4.0 * sr * sr
    if var_factor <= 0:
        raise ValueError(
            f"skew={skew} and kurtosis={kurtosis} give a non-positive Sharpe variance factor "
            f"({var_factor}) at sr={sr}; check that kurtosis is not the excess kurtosis"
        )
    z = (sr - sr_benchmark) * math.sqrt(n - 1) / math.sqrt(var_factor)
    return _NORMAL.cdf(z)


def expected_max_sharpe(n_trials: int, sr_variance: float) -> float:
    """Expected maximum Sharpe ratio of ``n_trials`` unskilled trials (the DSR's benchmark ``SR0``).

    ``SR0 = sqrt(sr_variance) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))`` with ``g``
    the Euler-Mascheroni constant (Bailey & Lopez de Prado 2014, eq. 2, true SR of zero).

    Args:
        n_trials: Number of independent trials ``N`` (at least 2).
        sr_variance: Variance across trials of their per-observation Sharpe ratios (>= 0).

    Returns:
        ``SR0`` in the same (per-observation) units as the trials' Sharpe ratios.

    Raises:
        ValueError: ``n_trials`` below 2 or not an integer, or ``sr_variance`` negative or
            non-finite (the message names the argument).
    """
    _check_count("n_trials", n_trials, minimum=2)
    _check_finite(sr_variance=sr_variance)
    if sr_variance < 0:
        raise ValueError(f"sr_variance must be >= 0, got {sr_variance}")
    z1 = _NORMAL.inv_cdf(1.0 - 1.0 / n_trials)
    z2 = _NORMAL.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(sr_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe_ratio(
    sr: float, n: int, skew: float, kurtosis: float, n_trials: int, sr_variance: float
) -> float:
    """Deflated Sharpe ratio: the PSR against the expected maximum Sharpe of ``n_trials`` trials.

    ``DSR = PSR(SR0)`` with ``SR0 = expected_max_sharpe(n_trials, sr_variance)``.

    Args:
        sr: Per-observation Sharpe ratio of the selected (best) strategy.
        n: Number of return observations behind ``sr``.
        skew: Skewness of the selected strategy's returns.
        kurtosis: Kurtosis of its returns, NOT excess (3 for normal).
        n_trials: Number of independent trials the strategy was selected from (at least 2).
        sr_variance: Variance of the trials' per-observation Sharpe ratios.

    Returns:
        A probability in [0, 1]; the paper reads above 0.95 as significant.

    Raises:
        ValueError: any argument out of range (the message names it).
    """
    sr0 = expected_max_sharpe(n_trials, sr_variance)
    return probabilistic_sharpe_ratio(sr, sr0, n, skew, kurtosis)


def _check_finite(**values: float) -> None:
    for name, value in values.items():
        numeric = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        if not numeric or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")


def _check_count(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
