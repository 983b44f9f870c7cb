"""Backtesting: a vectorised single-instrument engine, its statistics, and the PSR / DSR.

Numpy and the standard library only (no pandas, no ML library): the agent side and the CLI import it.
"""

from quantcrew.backtest.engine import BacktestResult, Costs, Trade, run_backtest
from quantcrew.backtest.sharpe import (
    SharpeMoments,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_moments,
)
from quantcrew.backtest.stats import Stats, compute_stats, max_drawdown, period_returns, sharpe_ratio, sortino_ratio

__all__ = [
    "BacktestResult",
    "Costs",
    "SharpeMoments",
    "Stats",
    "Trade",
    "compute_stats",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "max_drawdown",
    "period_returns",
    "probabilistic_sharpe_ratio",
    "run_backtest",
    "sharpe_moments",
    "sharpe_ratio",
    "sortino_ratio",
]
