"""Backtesting: the fill engine, its statistics, the walk-forward of the decision pipeline.

The performance statistics and the PSR / DSR live in :mod:`quantcrew.quant` (both sides use
them) and are re-exported here. Numpy and the standard library only (no pandas, no ML library):
the agent side and the CLI import it.
"""

from quantcrew.backtest.account import Account, Costs, Trade
from quantcrew.backtest.engine import BacktestResult, Execution, run_backtest
from quantcrew.backtest.stats import Stats, compute_stats
from quantcrew.quant.performance import max_drawdown, period_returns, sharpe_ratio, sortino_ratio
from quantcrew.quant.sharpe import (
    SharpeMoments,
    deflated_sharpe_ratio,
    expected_max_sharpe,
    probabilistic_sharpe_ratio,
    sharpe_moments,
)

__all__ = [
    "Account",
    "BacktestResult",
    "Costs",
    "Execution",
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
