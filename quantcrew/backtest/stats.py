"""Performance statistics of a backtest, from its equity curve and its trades.

Formulas (``r`` = per-bar simple returns, ``P`` = periods per year, zero risk-free rate):

* per-bar returns: ``r[0] = equity[0] / initial_cash - 1`` and ``r[t] = equity[t] / equity[t-1] - 1``,
  so ``r`` has one value per bar, aligned with the equity curve;
* total return: ``equity[-1] / initial_cash - 1``;
* annual return (geometric, CAGR over bars): ``(equity[-1] / initial_cash) ** (P / len(r)) - 1``;
* annualised volatility: ``std(r, ddof=1) * sqrt(P)``;
* Sharpe ratio: ``mean(r) / std(r, ddof=1) * sqrt(P)`` (arithmetic mean, NaN when ``std`` is 0);
* Sortino ratio: ``mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(P)``: the downside deviation
  uses every bar (target return 0), NaN when no bar lost;
* max drawdown: ``max(1 - equity / running_peak)`` as a positive fraction, the running peak
  starting at ``initial_cash``;
* number of trades: closed trades plus the one still open at the end, if any;
* win rate: fraction of those trades with PnL > 0 (net of costs), NaN without trades;
* exposure: fraction of bars that end with a non-zero position;
* turnover: one-way, annualised: ``sum(|traded notional| / equity before the fill) * P / len(r)``
  (entering and leaving a full-equity position once a year counts 2.0).

Backtesting.py annualises differently (geometric mean return and a matching geometric
volatility); the cross-check test documents how the two relate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "Stats",
    "compute_stats",
    "max_drawdown",
    "period_returns",
    "sharpe_ratio",
    "sortino_ratio",
]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Stats:
    """Summary statistics of one backtest (see the module docstring for each formula).

    Attributes:
        total_return: Final over initial equity, minus 1.
        annual_return: Geometric annual return.
        annual_volatility: Standard deviation of per-bar returns (ddof=1), annualised by sqrt(P).
        sharpe: Annualised Sharpe ratio (arithmetic, zero risk-free rate).
        sortino: Annualised Sortino ratio (downside deviation over all bars, target 0).
        max_drawdown: Largest peak-to-trough loss, a positive fraction.
        n_trades: Number of round-trip trades (an open one at the end included).
        win_rate: Fraction of trades with positive net PnL.
        exposure: Fraction of bars ending with a position.
        turnover: Annualised one-way turnover, in multiples of equity.
    """

    total_return: float
    annual_return: float
    annual_volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    n_trades: int
    win_rate: float
    exposure: float
    turnover: float

    def as_dict(self) -> dict[str, float | int]:
        """The statistics as a plain dict (for reports and JSON)."""
        return asdict(self)


def period_returns(equity: npt.ArrayLike, initial_cash: float) -> FloatArray:
    """Per-bar simple returns of an equity curve, the first one measured from ``initial_cash``."""
    eq = np.asarray(equity, dtype=np.float64)
    previous = np.concatenate(([float(initial_cash)], eq[:-1]))
    return eq / previous - 1.0


def sharpe_ratio(returns: npt.ArrayLike, periods_per_year: int) -> float:
    """Annualised Sharpe ratio ``mean(r) / std(r, ddof=1) * sqrt(P)``; NaN for fewer than 2 bars or zero std."""
    r = np.asarray(returns, dtype=np.float64)
    if r.shape[0] < 2:
        return math.nan
    std = float(r.std(ddof=1))
    if std == 0.0:
        return math.nan
    return float(r.mean()) / std * math.sqrt(periods_per_year)


def sortino_ratio(returns: npt.ArrayLike, periods_per_year: int) -> float:
    """Annualised Sortino ratio ``mean(r) / sqrt(mean(min(r, 0)**2)) * sqrt(P)``; NaN when no bar lost."""
    r = np.asarray(returns, dtype=np.float64)
    if r.shape[0] == 0:
        return math.nan
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside == 0.0:
        return math.nan
    return float(r.mean()) / downside * math.sqrt(periods_per_year)


def max_drawdown(equity: npt.ArrayLike, initial_cash: float | None = None) -> float:
    """Largest peak-to-trough loss of an equity curve, as a positive fraction (0 when it never falls).

    Args:
        equity: The equity curve.
        initial_cash: When given, the running peak starts there (a loss on the first bar counts).
    """
    eq = np.asarray(equity, dtype=np.float64)
    if eq.shape[0] == 0:
        return 0.0
    peak = np.maximum.accumulate(eq)
    if initial_cash is not None:
        peak = np.maximum(peak, float(initial_cash))
    return float(np.max(1.0 - eq / peak))


def compute_stats(
    equity: npt.ArrayLike,
    *,
    initial_cash: float,
    periods_per_year: int = 252,
    trade_pnls: Sequence[float] = (),
    positions: npt.ArrayLike | None = None,
    traded_fraction: npt.ArrayLike | None = None,
) -> Stats:
    """Statistics of an equity curve and its trades.

    Args:
        equity: Equity at each bar's close.
        initial_cash: Equity before the first bar.
        periods_per_year: Bars per year used to annualise (252 for daily bars).
        trade_pnls: Net PnL of each trade (for the count and the win rate).
        positions: Position held at each bar's close (for exposure); none means zero exposure.
        traded_fraction: Per fill, traded notional over equity before the fill (for turnover).

    Returns:
        The statistics.
    """
    eq = np.asarray(equity, dtype=np.float64)
    returns = period_returns(eq, initial_cash)
    n_bars = int(returns.shape[0])
    growth = float(eq[-1]) / initial_cash if n_bars else 1.0
    annual_return = growth ** (periods_per_year / n_bars) - 1.0 if n_bars and growth > 0 else -1.0
    annual_vol = float(returns.std(ddof=1)) * math.sqrt(periods_per_year) if n_bars > 1 else math.nan
    pnls = np.asarray(trade_pnls, dtype=np.float64)
    pos = np.zeros(n_bars) if positions is None else np.asarray(positions, dtype=np.float64)
    traded = np.zeros(0) if traded_fraction is None else np.asarray(traded_fraction, dtype=np.float64)
    return Stats(
        total_return=growth - 1.0,
        annual_return=annual_return,
        annual_volatility=annual_vol,
        sharpe=sharpe_ratio(returns, periods_per_year),
        sortino=sortino_ratio(returns, periods_per_year),
        max_drawdown=max_drawdown(eq, initial_cash),
        n_trades=int(pnls.shape[0]),
        win_rate=float(np.mean(pnls > 0)) if pnls.shape[0] else math.nan,
        exposure=float(np.mean(pos != 0)) if n_bars else 0.0,
        turnover=float(np.sum(np.abs(traded))) * periods_per_year / n_bars if n_bars else 0.0,
    )
