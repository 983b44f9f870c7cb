"""Performance statistics of a return series and its equity curve: the one implementation.

The backtest's statistics (:func:`quantcrew.backtest.stats.compute_stats`), the walk-forward's
and the ML server's RL evaluation all compute their returns, Sharpe, Sortino, drawdown and
turnover here. Formulas (``r`` = per-period simple returns, ``n`` = their number, ``P`` =
periods per year, zero risk-free rate):

* period returns of an equity curve: ``r[0] = equity[0] / initial - 1`` and
  ``r[t] = equity[t] / equity[t-1] - 1`` (one return per point of the curve);
* equity curve of returns: ``initial * cumprod(1 + r)``;
* total return: ``equity[-1] / initial - 1``;
* annual return (geometric): ``(1 + total) ** (P / n) - 1``, computed as
  ``expm1(log1p(total) * P / n)``; -1 for a book that lost everything (``total <= -1``), and
  capped at 1e300 instead of overflowing on absurd growth over few periods;
* annual volatility: ``std(r, ddof=1) * sqrt(P)``;
* Sharpe ratio: ``mean(r) / std(r, ddof=1) * sqrt(P)`` (arithmetic mean);
* Sortino ratio: ``mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(P)``: the downside deviation
  about a target of 0, over every period (not only the losing ones);
* max drawdown: ``max(1 - equity / peak)`` as a positive fraction, ``peak`` being the running
  maximum of the curve, started at ``initial`` when given (a loss in the first period counts);
* turnover: ``sum(|traded|) / n`` per period, times ``P`` when annualised (``traded`` in
  multiples of equity; one-way: entering and leaving a full position counts 2).

Zero volatility and short series, one convention for every statistic here: a ratio whose
denominator (the standard deviation, or the downside deviation) is at most :data:`MIN_STD` per
period is 0.0, and a standard deviation needs 2 returns, so with fewer the volatility and the
Sharpe ratio are 0.0 (the Sortino ratio needs one). With no return at all every figure is 0.0.
So every statistic of finite returns is finite: a book that never moved reports a Sharpe of 0
("no risk taken, no risk-adjusted return"), never NaN, which JSON replies (the ML server's
schemas refuse NaN) and comparisons between strategies can carry; and the standard deviation
of a constant series, which is float noise (about 1e-19), does not become a Sharpe of 1e16.

Numpy and the standard library only: the agent side and the ML server both import it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MIN_STD",
    "Performance",
    "annual_return",
    "annual_volatility",
    "equity_curve",
    "max_drawdown",
    "performance_of_equity",
    "performance_of_returns",
    "period_returns",
    "sharpe_ratio",
    "sortino_ratio",
    "total_return",
    "turnover",
]

FloatArray = npt.NDArray[np.float64]

MIN_STD = 1e-12
"""Per-period (downside) deviation at or below which the Sharpe or Sortino ratio is reported as 0."""

_MAX_LOG_GROWTH = 700.0  # exp(700) ~ 1e304: above it the annual return is capped, not inf
_CAPPED_RETURN = 1e300


@dataclass(frozen=True)
class Performance:
    """Return and risk of one return series (formulas and conventions in the module docstring).

    Attributes:
        total_return: Final over initial equity, minus 1.
        annual_return: Geometric annual return.
        annual_volatility: Sample standard deviation of the returns, annualised by ``sqrt(P)``.
        sharpe: Annualised Sharpe ratio (arithmetic mean, zero risk-free rate).
        sortino: Annualised Sortino ratio (downside deviation about 0 over every period).
        max_drawdown: Largest peak-to-trough loss of the equity curve, a positive fraction.
        n_periods: Number of returns.
    """

    total_return: float
    annual_return: float
    annual_volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    n_periods: int

    def as_dict(self) -> dict[str, float | int]:
        """The figures as a plain dict (JSON-able: every value is finite for finite returns)."""
        return asdict(self)


def period_returns(equity: npt.ArrayLike, initial: float = 1.0) -> FloatArray:
    """Per-period simple returns of an equity curve, the first one measured from ``initial``."""
    eq = np.asarray(equity, dtype=np.float64)
    previous = np.concatenate(([float(initial)], eq[:-1]))
    return np.asarray(eq / previous - 1.0, dtype=np.float64)


def equity_curve(returns: npt.ArrayLike, initial: float = 1.0) -> FloatArray:
    """The equity after each period, ``initial * cumprod(1 + r)``."""
    r = np.asarray(returns, dtype=np.float64)
    return np.asarray(float(initial) * np.cumprod(1.0 + r), dtype=np.float64)


def total_return(equity: npt.ArrayLike, initial: float = 1.0) -> float:
    """``equity[-1] / initial - 1``; 0 for an empty curve."""
    eq = np.asarray(equity, dtype=np.float64)
    if eq.shape[0] == 0:
        return 0.0
    return float(eq[-1]) / float(initial) - 1.0


def annual_return(total: float, n_periods: int, periods_per_year: int) -> float:
    """Geometric annual return of ``total`` earned over ``n_periods`` periods.

    ``expm1(log1p(total) * P / n)``: -1 when ``total <= -1`` (the book is wiped out), capped at
    1e300 rather than overflowing, 0 over no period.
    """
    if n_periods <= 0:
        return 0.0
    if total <= -1.0:
        return -1.0
    log_growth = math.log1p(total) * (periods_per_year / n_periods)
    return math.expm1(log_growth) if log_growth < _MAX_LOG_GROWTH else _CAPPED_RETURN


def annual_volatility(returns: npt.ArrayLike, periods_per_year: int) -> float:
    """``std(r, ddof=1) * sqrt(P)``; 0 for fewer than 2 returns."""
    return _std(np.asarray(returns, dtype=np.float64)) * math.sqrt(periods_per_year)


def sharpe_ratio(returns: npt.ArrayLike, periods_per_year: int) -> float:
    """``mean(r) / std(r, ddof=1) * sqrt(P)``; 0 when the std is at most :data:`MIN_STD` or with under 2 returns."""
    r = np.asarray(returns, dtype=np.float64)
    std = _std(r)
    if std <= MIN_STD:
        return 0.0
    return float(r.mean()) / std * math.sqrt(periods_per_year)


def sortino_ratio(returns: npt.ArrayLike, periods_per_year: int) -> float:
    """``mean(r) / sqrt(mean(min(r, 0)**2)) * sqrt(P)``; 0 when the downside deviation is at most :data:`MIN_STD`."""
    r = np.asarray(returns, dtype=np.float64)
    if r.shape[0] == 0:
        return 0.0
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside <= MIN_STD:
        return 0.0
    return float(r.mean()) / downside * math.sqrt(periods_per_year)


def max_drawdown(equity: npt.ArrayLike, initial: float | None = None) -> float:
    """Largest peak-to-trough loss of an equity curve, as a positive fraction (0 when it never falls).

    Args:
        equity: The equity curve.
        initial: When given, the running peak starts there (a loss in the first period counts).
    """
    eq = np.asarray(equity, dtype=np.float64)
    if eq.shape[0] == 0:
        return 0.0
    peak = np.maximum.accumulate(eq if initial is None else np.maximum(eq, float(initial)))
    return max(float(np.max(1.0 - eq / peak)), 0.0)


def turnover(traded: npt.ArrayLike, n_periods: int, periods_per_year: int | None = None) -> float:
    """One-way turnover: ``sum(|traded|) / n_periods``, times ``periods_per_year`` when given.

    Args:
        traded: Traded notional of each trade (or period) in multiples of the equity.
        n_periods: Periods the trades were spread over (0 gives 0).
        periods_per_year: Annualise to turnover per year; None: turnover per period.
    """
    if n_periods <= 0:
        return 0.0
    total = float(np.sum(np.abs(np.asarray(traded, dtype=np.float64))))
    if periods_per_year is None:
        return total / n_periods
    return total * periods_per_year / n_periods


def performance_of_equity(equity: npt.ArrayLike, *, initial: float, periods_per_year: int) -> Performance:
    """Return and risk of an equity curve (its returns are :func:`period_returns`).

    Args:
        equity: Equity at the end of each period.
        initial: Equity before the first period.
        periods_per_year: Periods per year, to annualise (252 for daily bars).
    """
    eq = np.asarray(equity, dtype=np.float64)
    return _performance(period_returns(eq, initial), eq, float(initial), periods_per_year)


def performance_of_returns(returns: npt.ArrayLike, *, periods_per_year: int, initial: float = 1.0) -> Performance:
    """Return and risk of a return series (its equity curve is :func:`equity_curve`).

    Args:
        returns: Simple return of each period.
        periods_per_year: Periods per year, to annualise (252 for daily bars).
        initial: Equity before the first period (scales the curve; the figures do not depend on it).
    """
    r = np.asarray(returns, dtype=np.float64)
    return _performance(r, equity_curve(r, initial), float(initial), periods_per_year)


def _performance(returns: FloatArray, equity: FloatArray, initial: float, periods_per_year: int) -> Performance:
    n = int(returns.shape[0])
    total = total_return(equity, initial)
    return Performance(
        total_return=total,
        annual_return=annual_return(total, n, periods_per_year),
        annual_volatility=annual_volatility(returns, periods_per_year),
        sharpe=sharpe_ratio(returns, periods_per_year),
        sortino=sortino_ratio(returns, periods_per_year),
        max_drawdown=max_drawdown(equity, initial),
        n_periods=n,
    )


def _std(r: FloatArray) -> float:
    """Sample standard deviation (``ddof=1``), 0 for fewer than 2 values."""
    return float(r.std(ddof=1)) if r.shape[0] > 1 else 0.0
