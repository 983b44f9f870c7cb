"""The trivial baselines every walk-forward is measured against, on the crew's own fills and costs.

Each baseline decides at the close of bar ``t`` from closes ``<= t`` and is filled by the same
:class:`~quantcrew.backtest.engine.Execution` as the crew (same fill, same stale-open rule, same
cost per unit of turnover), equal weights ``1/n`` per symbol:

* ``buy_and_hold``: long ``1/n`` of each symbol from the first decision, never rebalanced.
* ``trend``: long ``1/n`` while the close is above its simple moving average over the
  calendar equivalent of 200 trading days (``round(200 * P / 252)`` bars for ``P`` bars a year;
  200 on daily equity data), flat otherwise; trades only when the signal flips.
* ``vol_target``: buy-and-hold scaled to a 10% annual volatility: ``min(0.10 / sigma, 1) / n``
  per symbol, ``sigma`` the symbol's realised volatility over the calendar equivalent of 20
  trading days, annualised by ``sqrt(P)``; no leverage. Rebalanced only when some symbol's
  weight is more than :data:`VOL_TARGET_BAND` (0.05) away from its target, so the baseline is
  not charged daily turnover a practitioner would not pay.

None of them has a drawdown stop or any limit: they are what a user gets for no work.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcrew.backtest.account import Account, Costs, FillRecord
from quantcrew.backtest.engine import Execution, Fill, StaleOpens
from quantcrew.backtest.stats import Stats, compute_stats

__all__ = ["BASELINES", "TREND_DAYS", "VOL_TARGET", "VOL_TARGET_BAND", "BaselineRun", "calendar_bars",
           "run_baselines"]

FloatArray = npt.NDArray[np.float64]

BASELINES: dict[str, str] = {"buy_and_hold": "buy & hold", "trend": "200-day trend", "vol_target": "10% vol target"}
"""Name of each baseline -> its label in reports."""

TREND_DAYS = 200
VOL_TARGET = 0.10
VOL_DAYS = 20
VOL_TARGET_BAND = 0.05
_DAILY = 252


def calendar_bars(days: int, periods_per_year: int) -> int:
    """The number of bars that spans ``days`` trading days on a calendar of ``periods_per_year`` bars."""
    return max(2, round(days * periods_per_year / _DAILY))


@dataclass(frozen=True, eq=False)
class BaselineRun:
    """One baseline over the span; arrays have one row per bar of the span.

    Attributes:
        name: Key in :data:`BASELINES`.
        label: Its name in reports.
        equity: Equity at each close (1.0 before the first bar).
        weights: Weight held at each close, shape (bars, symbols).
        turnover: Per-bar one-way turnover filled in that bar.
        fills: Every weight change (bars counted from the span's first bar).
        stats: Its statistics.
        rule: The rule in words, with its windows on this calendar.
    """

    name: str
    label: str
    equity: FloatArray
    weights: FloatArray
    turnover: FloatArray
    fills: list[FillRecord]
    stats: Stats
    rule: str


def run_baselines(opens: npt.ArrayLike, closes: npt.ArrayLike, start: int, *, cost: Costs, fill: Fill,
                  stale_opens: StaleOpens, periods_per_year: int) -> dict[str, BaselineRun]:
    """Run every baseline over bars ``start..`` of the series (bars before ``start`` are history only).

    Args:
        opens: Opens, shape (bars, symbols), the history before the span included.
        closes: Closes, same shape.
        start: Index of the span's first bar (its first decision).
        cost: The crew's costs.
        fill: The crew's fill.
        stale_opens: The crew's stale-open rule.
        periods_per_year: Bars per year of the data's calendar.

    Returns:
        The runs, keyed as :data:`BASELINES`.
    """
    o = np.asarray(opens, dtype=np.float64)
    c = np.asarray(closes, dtype=np.float64)
    o, c = (o[:, None], c[:, None]) if c.ndim == 1 else (o, c)
    n_sym = c.shape[1]
    trend_w = calendar_bars(TREND_DAYS, periods_per_year)
    vol_w = calendar_bars(VOL_DAYS, periods_per_year)
    equal = np.full(n_sym, 1.0 / n_sym)
    sma = _trailing_mean(c, trend_w)
    rets = np.vstack([np.full((1, n_sym), np.nan), c[1:] / c[:-1] - 1.0])
    sigma = _trailing_std(rets, vol_w) * math.sqrt(periods_per_year)

    def hold(t: int, weights: FloatArray) -> FloatArray | None:
        return equal if t == start else None

    def trend(t: int, weights: FloatArray) -> FloatArray | None:
        target = np.where(np.isfinite(sma[t]) & (c[t] > sma[t]), equal, 0.0)
        return target if t == start or np.any((target > 0) != (np.abs(weights) > 1e-12)) else None

    def vol_target(t: int, weights: FloatArray) -> FloatArray | None:
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(np.isfinite(sigma[t]) & (sigma[t] > 0), np.minimum(VOL_TARGET / sigma[t], 1.0), 1.0)
        target = scale * equal
        return target if t == start or np.any(np.abs(target - weights) > VOL_TARGET_BAND) else None

    rules: dict[str, tuple[Callable[[int, FloatArray], FloatArray | None], str]] = {
        "buy_and_hold": (hold, f"long 1/{n_sym} of each symbol from the first decision, never rebalanced"),
        "trend": (trend, f"long 1/{n_sym} while the close is above its {trend_w}-bar average, else flat"),
        "vol_target": (vol_target, f"min({VOL_TARGET:.0%} / {vol_w}-bar realised volatility, 1) / {n_sym} per "
                                   f"symbol, rebalanced when a weight is {VOL_TARGET_BAND} off target"),
    }
    return {name: _run(name, rule, text, o, c, start, cost=cost, fill=fill, stale_opens=stale_opens,
                       periods_per_year=periods_per_year) for name, (rule, text) in rules.items()}


def _run(name: str, rule: Callable[[int, FloatArray], FloatArray | None], text: str, o: FloatArray, c: FloatArray,
         start: int, *, cost: Costs, fill: Fill, stale_opens: StaleOpens, periods_per_year: int) -> BaselineRun:
    n = c.shape[0] - start
    account = Account(c.shape[1], costs=cost, sizing="weights")
    execution = Execution(account, o[start:], c[start:], fill=fill, stale_opens=stale_opens)
    equity, weights = np.empty(n), np.empty((n, c.shape[1]))
    for j in range(n):
        if j > 0:
            execution.advance(j)
        target = rule(start + j, account.weights)
        if target is not None:
            execution.order(j, target)
        equity[j], weights[j] = account.equity, account.weights
    stats = compute_stats(equity, initial_cash=1.0, periods_per_year=periods_per_year,
                          trade_pnls=account.trade_pnls(), positions=np.abs(weights).sum(axis=1),
                          traded_fraction=execution.traded)
    return BaselineRun(name=name, label=BASELINES[name], equity=equity, weights=weights, turnover=execution.traded,
                       fills=list(account.fills), stats=stats, rule=text)


def _trailing_mean(x: FloatArray, window: int) -> FloatArray:
    """Mean of the last ``window`` rows up to each row (NaN before ``window`` rows exist)."""
    out = np.full_like(x, np.nan)
    if x.shape[0] >= window:
        cum = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
        out[window - 1:] = (cum[window:] - cum[:-window]) / window
    return out


def _trailing_std(x: FloatArray, window: int) -> FloatArray:
    """Sample standard deviation (ddof=1) of the last ``window`` rows up to each row, NaN rows ignored."""
    out = np.full_like(x, np.nan)
    if x.shape[0] >= window:
        windows = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)  # (rows - window + 1, cols, window)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the first window holds the NaN before any return
            out[window - 1:] = np.nanstd(windows, axis=2, ddof=1)
    return out
