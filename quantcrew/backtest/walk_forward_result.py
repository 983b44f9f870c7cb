"""What a walk-forward run produced: per-bar series, decisions, regime fits, baselines, statistics.

Also the probabilistic Sharpe ratio of buy-and-hold and the JSON-able summary of the run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from quantcrew.backtest.account import FillRecord
from quantcrew.backtest.agent_models import AgentWindow
from quantcrew.backtest.baselines import BaselineRun
from quantcrew.backtest.comparison import Comparison
from quantcrew.backtest.sizing import SizingWindow
from quantcrew.backtest.stats import Stats
from quantcrew.backtest.trials import TrialsView
from quantcrew.quant.performance import period_returns
from quantcrew.quant.sharpe import probabilistic_sharpe_ratio, sharpe_moments

__all__ = ["DecisionRecord", "RegimeFit", "WalkForwardResult", "probabilistic_sharpe"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RegimeFit:
    """One HMM fitted by a causal labelling job for a block of the walk-forward (``job_id``: that job)."""

    symbol: str
    fit_date: str
    n_train: int
    block_start: str
    block_end: str
    job_id: str
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
        stats: Strategy statistics (:func:`~quantcrew.backtest.stats.compute_stats`).
        baselines: The trivial baselines on the same fills and costs (:mod:`quantcrew.backtest.baselines`).
        comparisons: The strategy against each baseline (:mod:`quantcrew.backtest.comparison`).
        yearly: Each calendar year's return of the strategy and the baselines.
        dsr: Deflated Sharpe ratio of the strategy over every trial on the span (NaN when undefined).
        benchmark_psr: Probabilistic Sharpe ratio of buy-and-hold against 0 (one trial: nothing to deflate).
        trials: What the DSR deflated by (:mod:`quantcrew.backtest.trials`).
        trial_sharpes: Annualised Sharpe of this run's trials (strategy and single-agent alternatives).
        alternatives: Statistics of the same pipeline following one agent all the time.
        decisions: One record per bar and symbol.
        regime_fits: Every HMM fitted.
        bandit_id: Id of the bandit on the server; bandit_name its unique name.
        stop_dates: Dates the drawdown stop fired.
        fills: The strategy's blotter: every weight change (bars counted from the span's first bar).
        periods_per_year: Bars per year of the data's calendar, used by every annualised figure.
        config: The run's parameters.
        wall_s: Seconds the run took.
        notes: Anything the numbers need said with them.
        agents_used: Where the agents' targets came from, in words.
        agent_windows: With trained models: each symbol-window's policies and which answered.
        sizing_windows: With trained models: each symbol-window's ensemble and execution network, and what sized.
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
    stats: Stats
    baselines: dict[str, BaselineRun]
    comparisons: list[Comparison]
    yearly: list[dict[str, Any]]
    dsr: float
    benchmark_psr: float
    trials: TrialsView
    trial_sharpes: dict[str, float]
    alternatives: dict[str, Stats]
    decisions: list[DecisionRecord]
    regime_fits: list[RegimeFit]
    bandit_id: str
    bandit_name: str
    stop_dates: list[str]
    fills: list[FillRecord]
    periods_per_year: int
    config: dict[str, Any]
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    agents_used: str = "rules (quantcrew.tools.fallbacks.rule_positions)"
    agent_windows: list[AgentWindow] = field(default_factory=list)
    sizing_windows: list[SizingWindow] = field(default_factory=list)

    @property
    def returns(self) -> FloatArray:
        """Per-bar net returns of the strategy (the first from the initial 1.0)."""
        return period_returns(self.equity, 1.0)

    @property
    def n_trials(self) -> int:
        """Trials the DSR deflated by."""
        return self.trials.n_trials

    @property
    def benchmark_equity(self) -> FloatArray:
        """Buy-and-hold equity at each close."""
        return self.baselines["buy_and_hold"].equity

    @property
    def benchmark_stats(self) -> Stats:
        """Buy-and-hold statistics."""
        return self.baselines["buy_and_hold"].stats

    @property
    def model_ids(self) -> list[str]:
        """Every stored ML-server model used: with trained models, the policies, ensembles and execution
        networks; the bandit (a causal job's regime fits are not stored: :attr:`regime_jobs`)."""
        policies = [m for w in self.agent_windows for m in w.models.values()]
        sizing = [x for w in self.sizing_windows for x in (w.ensemble_id, w.execution_id) if x]
        return policies + sizing + [self.bandit_id]

    @property
    def regime_jobs(self) -> list[str]:
        """The causal labelling jobs that fitted the regimes, one per symbol."""
        return list(dict.fromkeys(f.job_id for f in self.regime_fits))

    def summary(self) -> dict[str, Any]:
        """The JSON-able summary: parameters, statistics, baselines, comparisons, DSR, models (no per-bar series)."""
        return {
            "symbols": self.symbols, "start": self.dates[0], "end": self.dates[-1], "n_bars": len(self.dates),
            "periods_per_year": self.periods_per_year, "config": self.config,
            "strategy": {**self.stats.as_dict(), "dsr": self.dsr},
            "baselines": {k: {**b.stats.as_dict(), "rule": b.rule} for k, b in self.baselines.items()},
            "buy_and_hold_psr": self.benchmark_psr,
            "comparisons": [c.as_dict() for c in self.comparisons],
            "beat": {c.baseline: c.beat for c in self.comparisons},
            "yearly": self.yearly,
            "trials": {"span": self.trials.span, "n_trials": self.trials.n_trials, "new": self.trials.new,
                       "sharpe_variance": self.trials.sharpe_variance, "ledger": self.trials.ledger},
            "trial_sharpes": self.trial_sharpes,
            "alternatives": {k: v.as_dict() for k, v in self.alternatives.items()},
            "regime_fits": len(self.regime_fits), "regime_jobs": self.regime_jobs,
            "bandit_id": self.bandit_id, "bandit_name": self.bandit_name,
            "model_ids": self.model_ids, "stop_dates": self.stop_dates, "n_fills": len(self.fills),
            "wall_s": self.wall_s, "notes": self.notes,
            "agents": self.agents_used,
            "agent_windows": [dataclasses.asdict(w) for w in self.agent_windows],
            "sizing_windows": [dataclasses.asdict(w) for w in self.sizing_windows],
        }


def probabilistic_sharpe(returns: FloatArray) -> float:
    """PSR of ``returns`` against a Sharpe of 0; NaN for a series that never moved."""
    try:
        m = sharpe_moments(returns)
        return probabilistic_sharpe_ratio(m.sr, 0.0, m.n, m.skew, m.kurtosis)
    except ValueError:
        return math.nan
