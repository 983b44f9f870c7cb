"""What a walk-forward run produced: per-bar series, decisions, regime fits, statistics.

Also the buy-and-hold benchmark and the probabilistic / deflated Sharpe ratios of the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from quantcrew.backtest.stats import Stats, compute_stats
from quantcrew.quant.performance import period_returns
from quantcrew.quant.sharpe import deflated_sharpe_ratio, probabilistic_sharpe_ratio, sharpe_moments

__all__ = ["PERIODS_PER_YEAR", "DecisionRecord", "RegimeFit", "WalkForwardResult", "buy_and_hold", "deflated_sharpe",
           "probabilistic_sharpe"]

FloatArray = npt.NDArray[np.float64]

PERIODS_PER_YEAR = 252


@dataclass(frozen=True)
class RegimeFit:
    """One HMM fitted on the server for a block of the walk-forward."""

    symbol: str
    fit_date: str
    n_train: int
    block_start: str
    block_end: str
    model_id: str
    model_version: int | None
    n_states: int
    converged: bool
    method_used: str
    fallback: bool


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """What was decided for one symbol at one close (light: no text beyond the limits)."""

    date: str
    symbol: str
    regime: str
    agent: str
    conviction: float
    size: float
    target: float
    drawdown: float
    decision_id: str | None
    limits: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class WalkForwardResult:
    """Everything a walk-forward run produced; arrays have one row per bar of the span.

    Attributes:
        symbols: The symbols, in column order.
        dates: ISO date of each bar.
        equity: Strategy equity at each close (1.0 before the first bar).
        gross_returns: Per-bar return before costs.
        costs: Per-bar cost, as a fraction of equity.
        turnover: Per-bar one-way turnover.
        positions: Target position per bar and symbol (fraction of equity), shape (bars, symbols).
        regimes: Filtered regime label per symbol, per bar.
        agents: Agent followed per symbol, per bar (the bandit's choice).
        benchmark_equity: Buy-and-hold equity at each close.
        stats: Strategy statistics (:func:`~quantcrew.backtest.stats.compute_stats`).
        benchmark_stats: Buy-and-hold statistics.
        dsr: Deflated Sharpe ratio of the strategy (NaN when undefined).
        benchmark_psr: Probabilistic Sharpe ratio of buy-and-hold against 0 (one trial: nothing to deflate).
        n_trials: Trials the DSR assumes.
        trial_sharpes: Annualised Sharpe of every trial (strategy and single-agent alternatives).
        alternatives: Statistics of the same pipeline following one agent all the time.
        decisions: One record per bar and symbol.
        regime_fits: Every HMM fitted.
        bandit_id: Id of the bandit on the server; bandit_name its unique name.
        stop_dates: Dates the drawdown stop fired.
        config: The run's parameters.
        wall_s: Seconds the run took.
        regime_wait_s: Of which the bar loop waited for regime fits (they run one block ahead).
        notes: Anything the numbers need said with them.
    """

    symbols: list[str]
    dates: list[str]
    equity: FloatArray
    gross_returns: FloatArray
    costs: FloatArray
    turnover: FloatArray
    positions: FloatArray
    regimes: dict[str, list[str]]
    agents: dict[str, list[str]]
    benchmark_equity: FloatArray
    stats: Stats
    benchmark_stats: Stats
    dsr: float
    benchmark_psr: float
    n_trials: int
    trial_sharpes: dict[str, float]
    alternatives: dict[str, Stats]
    decisions: list[DecisionRecord]
    regime_fits: list[RegimeFit]
    bandit_id: str
    bandit_name: str
    stop_dates: list[str]
    config: dict[str, Any]
    wall_s: float = 0.0
    regime_wait_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def returns(self) -> FloatArray:
        """Per-bar net returns of the strategy (the first from the initial 1.0)."""
        return period_returns(self.equity, 1.0)

    @property
    def model_ids(self) -> list[str]:
        """Every ML-server model used: the regime fits, then the bandit."""
        return [f.model_id for f in self.regime_fits] + [self.bandit_id]

    def summary(self) -> dict[str, Any]:
        """The JSON-able summary: parameters, statistics, DSR, models (no per-bar series)."""
        return {
            "symbols": self.symbols, "start": self.dates[0], "end": self.dates[-1], "n_bars": len(self.dates),
            "config": self.config,
            "strategy": {**self.stats.as_dict(), "dsr": self.dsr},
            "buy_and_hold": {**self.benchmark_stats.as_dict(), "psr": self.benchmark_psr},
            "n_trials": self.n_trials, "trial_sharpes": self.trial_sharpes,
            "alternatives": {k: v.as_dict() for k, v in self.alternatives.items()},
            "regime_fits": len(self.regime_fits), "bandit_id": self.bandit_id, "bandit_name": self.bandit_name,
            "model_ids": self.model_ids, "stop_dates": self.stop_dates, "wall_s": self.wall_s, "notes": self.notes,
            "agents": "rule agents (quantcrew.tools.fallbacks.rule_positions); no RL policy is trained per window",
        }


def buy_and_hold(closes: FloatArray, cost: float) -> tuple[FloatArray, Stats]:
    """Equal-weight buy-and-hold bought at the first close (paying ``cost`` once), never rebalanced.

    Args:
        closes: Closes of the span, shape (bars, symbols) or (bars,).
        cost: Cost per unit of turnover, as a fraction.

    Returns:
        The equity curve (1.0 before the first bar) and its statistics.
    """
    c = np.asarray(closes, dtype=np.float64)
    c = c[:, None] if c.ndim == 1 else c
    growth = c / c[0]
    equity = (1.0 - cost) * growth.mean(axis=1)
    pnls = ((1.0 - cost) * (growth[-1] - 1.0) - cost) / c.shape[1]
    stats = compute_stats(equity, initial_cash=1.0, periods_per_year=PERIODS_PER_YEAR, trade_pnls=pnls.tolist(),
                          positions=np.ones(equity.shape[0]), traded_fraction=[1.0])
    return equity, stats


def deflated_sharpe(returns: FloatArray, annual_sharpes: list[float], n_trials: int) -> float:
    if len(annual_sharpes) < 2:
        return math.nan
    try:
        m = sharpe_moments(returns)
        variance = float(np.var(np.asarray(annual_sharpes) / math.sqrt(PERIODS_PER_YEAR), ddof=1))
        return deflated_sharpe_ratio(m.sr, m.n, m.skew, m.kurtosis, n_trials, variance)
    except ValueError:
        return math.nan


def probabilistic_sharpe(returns: FloatArray) -> float:
    try:
        m = sharpe_moments(returns)
        return probabilistic_sharpe_ratio(m.sr, 0.0, m.n, m.skew, m.kurtosis)
    except ValueError:
        return math.nan
