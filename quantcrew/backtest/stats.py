"""Statistics of a backtest: the performance of its equity curve, and its trades.

Return, volatility, Sharpe, Sortino, drawdown and turnover are those of
:mod:`quantcrew.quant.performance` (formulas and the zero-volatility convention there: a flat
book has a Sharpe and Sortino of 0, never NaN), applied to the per-bar returns of the equity
curve, the first one measured from the initial cash, with the running peak of the drawdown
starting at the initial cash. The rest:

* number of trades: closed trades plus the one still open at the end, if any;
* win rate: fraction of those trades with PnL > 0 (net of costs), NaN without trades;
* exposure: fraction of bars that end with a non-zero position;
* turnover: one-way, annualised: ``sum(|traded notional| / equity before the fill) * P / bars``
  (entering and leaving a full-equity position once a year counts 2.0).

Backtesting.py annualises differently (geometric mean return and a matching geometric
volatility); the engine's cross-check test documents how the two relate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from quantcrew.quant.performance import performance_of_equity, turnover

__all__ = ["Stats", "compute_stats"]


@dataclass(frozen=True)
class Stats:
    """Summary statistics of one backtest (see the module docstring for each formula).

    Attributes:
        total_return: Final over initial equity, minus 1.
        annual_return: Geometric annual return.
        annual_volatility: Standard deviation of per-bar returns (ddof=1), annualised by sqrt(P).
        sharpe: Annualised Sharpe ratio (arithmetic, zero risk-free rate; 0 at zero volatility).
        sortino: Annualised Sortino ratio (downside deviation over all bars, target 0; 0 without losses).
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
    perf = performance_of_equity(equity, initial=float(initial_cash), periods_per_year=periods_per_year)
    n_bars = perf.n_periods
    pnls = np.asarray(trade_pnls, dtype=np.float64)
    pos = np.zeros(n_bars) if positions is None else np.asarray(positions, dtype=np.float64)
    traded = np.zeros(0) if traded_fraction is None else np.asarray(traded_fraction, dtype=np.float64)
    return Stats(
        total_return=perf.total_return,
        annual_return=perf.annual_return,
        annual_volatility=perf.annual_volatility,
        sharpe=perf.sharpe,
        sortino=perf.sortino,
        max_drawdown=perf.max_drawdown,
        n_trades=int(pnls.shape[0]),
        win_rate=float(np.mean(pnls > 0)) if pnls.shape[0] else math.nan,
        exposure=float(np.mean(pos != 0)) if n_bars else 0.0,
        turnover=turnover(traded, n_bars, periods_per_year),
    )
