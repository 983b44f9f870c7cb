"""Trials of a backtest search and the deflated Sharpe ratio over all of them (numpy only).

Choosing the best of many backtests inflates its Sharpe ratio. The deflated Sharpe ratio
(:func:`quantcrew.quant.sharpe.deflated_sharpe_ratio`) corrects for it, but only if it knows how
many were tried and how far their Sharpe ratios spread. A :class:`Trial` is one configuration's
result on a data span; :func:`trials_dsr` deflates by ``N`` distinct trials and the variance of
their per-bar Sharpe ratios. The ledger that keeps them is the runs store's ``backtest_trials``
table (:mod:`quantcrew.backtest.trials` says what a span is).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from quantcrew.quant.sharpe import deflated_sharpe_ratio, sharpe_moments

__all__ = ["Trial", "TrialsLedger", "config_hash", "trials_dsr"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Trial:
    """One configuration's result on a span.

    Attributes:
        name: What was run (``strategy``, ``follow conservative``...).
        config_hash: ``sha256`` hex of the configuration (:func:`config_hash`).
        sharpe: Annualised Sharpe ratio after costs.
        periods_per_year: Bars per year it was annualised with.
        n_bars: Bars of the span.
        config: The configuration itself (JSON-able).
    """

    name: str
    config_hash: str
    sharpe: float
    periods_per_year: int
    n_bars: int
    config: Mapping[str, Any]

    @property
    def per_bar_sharpe(self) -> float:
        """The Sharpe ratio per bar (the DSR's unit)."""
        return self.sharpe / math.sqrt(self.periods_per_year)


class TrialsLedger(Protocol):
    """Where trials are kept (the runs store implements it)."""

    def record_trials(self, span: str, trials: Sequence[Trial]) -> int:
        """Record trials on ``span`` (a trial already there is replaced); returns how many were new."""
        ...

    def span_trials(self, span: str) -> list[Trial]:
        """Every distinct trial recorded on ``span``."""
        ...


def config_hash(config: Mapping[str, Any]) -> str:
    """``sha256`` hex of a configuration, canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def trials_dsr(returns: FloatArray, trials: Sequence[Trial]) -> tuple[float, float]:
    """The DSR of ``returns`` deflated by ``trials``; with the variance of their per-bar Sharpe ratios.

    Trials whose Sharpe is exactly 0 by convention (a book that never moved) are counted in ``N``
    but left out of the variance. NaN when fewer than two trials have a measured Sharpe ratio, or
    the returns never varied.
    """
    measured = np.array([t.per_bar_sharpe for t in trials if t.sharpe != 0.0 and math.isfinite(t.sharpe)])
    if measured.shape[0] < 2 or len(trials) < 2:
        return math.nan, math.nan
    variance = float(np.var(measured, ddof=1))
    try:
        m = sharpe_moments(returns)
        return deflated_sharpe_ratio(m.sr, m.n, m.skew, m.kurtosis, len(trials), variance), variance
    except ValueError:
        return math.nan, variance
