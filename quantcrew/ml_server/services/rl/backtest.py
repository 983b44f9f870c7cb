"""Out-of-sample backtest of a position path with costs, the benchmarks, and returns by regime.

Same cost model as :class:`~quantcrew.ml_server.services.rl.env.TradingEnv` (a test runs
both on the same positions and compares bar by bar)::

    net_t = p_t * forward_returns[t] - (cost_bps + slippage_bps) * 1e-4 * |p_t - p_{t-1}|

with ``p_{-1} = initial_position``. Metrics (``N`` bars, ``P`` periods per year, returns
compounded, risk-free rate 0):

* ``total_return = prod(1 + net) - 1``; ``annual_return = (1 + total) ** (P / N) - 1``;
* ``annual_volatility = std(net, ddof=1) * sqrt(P)``; ``sharpe = mean(net) / std(net) * sqrt(P)``;
* ``sortino = mean(net) / sqrt(mean(min(net, 0)^2)) * sqrt(P)`` (target 0, over every bar);
* ``max_drawdown``: largest fall of the equity curve from its running peak (the start, 1,
  counts as a peak), a positive fraction;
* ``turnover``: mean ``|p_t - p_{t-1}|`` per bar; ``exposure``: mean ``|p_t|``;
* ``hit_rate``: share of the bars in the market (``p_t != 0``) whose net return is positive.

``P`` is the bars per year of the data's own calendar
(:func:`quantcrew.data.frequency.periods_per_year`: about 252 for daily equity bars, 365 for
crypto, 52 weekly, 12 monthly), which every caller here passes; the default, the nominal daily
figure, serves callers that only want the net returns.

Return, volatility, Sharpe, Sortino, drawdown and turnover are those of
:mod:`quantcrew.quant.performance`, with its convention: every metric is finite, a (near)
zero-volatility series has Sharpe 0, no losing bar gives Sortino 0, a wiped-out book gives an
annual return of -1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from quantcrew.data.frequency import NOMINAL_PERIODS
from quantcrew.quant.performance import performance_of_returns, turnover

__all__ = [
    "BacktestMetrics",
    "RegimeReturn",
    "backtest",
    "benchmarks",
    "regime_returns",
]

FloatArray = npt.NDArray[np.float64]

_DAILY = NOMINAL_PERIODS["daily"]


@dataclass(frozen=True)
class BacktestMetrics:
    """Performance of one position path over ``n_bars`` bars (see the module docstring)."""

    total_return: float
    annual_return: float
    annual_volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    turnover: float
    hit_rate: float
    exposure: float
    n_bars: int
    periods_per_year: int

    def as_dict(self) -> dict[str, float | int]:
        """The metrics as a plain dict (JSON-able)."""
        return asdict(self)


@dataclass(frozen=True)
class RegimeReturn:
    """Compounded net return over the bars of one regime label.

    Attributes:
        total_return: ``prod(1 + net) - 1`` over the label's bars (not necessarily contiguous).
        n_bars: Number of bars with that label.
    """

    total_return: float
    n_bars: int

    def as_dict(self) -> dict[str, float | int]:
        """The figures as a plain dict (JSON-able)."""
        return asdict(self)


def backtest(
    positions: npt.ArrayLike,
    forward_returns: npt.ArrayLike,
    *,
    cost_bps: float,
    slippage_bps: float,
    initial_position: float = 0.0,
    periods_per_year: int = _DAILY,
) -> tuple[BacktestMetrics, FloatArray]:
    """Backtest positions held over bars with known forward returns.

    Args:
        positions: Position held over each bar, shape ``(N,)``.
        forward_returns: Return of the asset over each bar, shape ``(N,)``.
        cost_bps: Commission per unit of turnover, in basis points.
        slippage_bps: Slippage per unit of turnover, in basis points.
        initial_position: Position held before the first bar.
        periods_per_year: Bars per year of the data's calendar, for annualising.

    Returns:
        The metrics and the per-bar net returns.

    Raises:
        ValueError: Empty, ragged or non-finite inputs, negative costs, a bad period count.
    """
    p = np.asarray(positions, dtype=np.float64)
    fwd = np.asarray(forward_returns, dtype=np.float64)
    if p.ndim != 1 or p.shape[0] == 0 or fwd.shape != p.shape:
        raise ValueError(
            f"positions and forward_returns must be 1-D of one non-zero length, got {p.shape}, {fwd.shape}"
        )
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(fwd))):
        raise ValueError("positions and forward_returns must be finite")
    for name, value in (("cost_bps", cost_bps), ("slippage_bps", slippage_bps), ("initial_position", initial_position)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value}")
    if cost_bps < 0.0 or slippage_bps < 0.0:
        raise ValueError(f"cost_bps and slippage_bps must be non-negative, got {cost_bps}, {slippage_bps}")
    if int(periods_per_year) < 1:
        raise ValueError(f"periods_per_year must be a positive integer, got {periods_per_year}")

    rate = (float(cost_bps) + float(slippage_bps)) * 1e-4
    previous = np.empty_like(p)
    previous[0] = float(initial_position)
    previous[1:] = p[:-1]
    turnover = np.abs(p - previous)
    net = p * fwd - rate * turnover
    return _metrics(net, p, turnover, int(periods_per_year)), net


def benchmarks(
    forward_returns: npt.ArrayLike,
    *,
    cost_bps: float,
    slippage_bps: float,
    periods_per_year: int = _DAILY,
) -> dict[str, BacktestMetrics]:
    """``buy_and_hold`` (long every bar, entering from flat: one entry cost) and ``flat``."""
    fwd = np.asarray(forward_returns, dtype=np.float64)
    out: dict[str, BacktestMetrics] = {}
    for name, level in (("buy_and_hold", 1.0), ("flat", 0.0)):
        metrics, _ = backtest(
            np.full(fwd.shape, level),
            fwd,
            cost_bps=cost_bps,
            slippage_bps=slippage_bps,
            periods_per_year=periods_per_year,
        )
        out[name] = metrics
    return out


def regime_returns(net_returns: npt.ArrayLike, labels: Sequence[str]) -> dict[str, RegimeReturn]:
    """Compounded net return and bar count per regime label, labels in sorted order.

    Raises:
        ValueError: ``labels`` and ``net_returns`` differ in length, or returns are not finite.
    """
    net = np.asarray(net_returns, dtype=np.float64)
    names = np.asarray([str(v) for v in labels])
    if net.ndim != 1 or names.shape != net.shape:
        raise ValueError(f"net_returns and labels must be 1-D of one length, got {net.shape} and {names.shape}")
    if not np.all(np.isfinite(net)):
        raise ValueError("net_returns must be finite")
    out: dict[str, RegimeReturn] = {}
    for label in sorted(set(names.tolist())):
        mask = names == label
        total = float(np.prod(1.0 + net[mask]) - 1.0)
        out[label] = RegimeReturn(total_return=total, n_bars=int(mask.sum()))
    return out


def _metrics(net: FloatArray, positions: FloatArray, traded: FloatArray, ppy: int) -> BacktestMetrics:
    perf = performance_of_returns(net, periods_per_year=ppy)
    in_market = positions != 0.0
    n_in = int(in_market.sum())
    hit = float(np.count_nonzero(net[in_market] > 0.0) / n_in) if n_in else 0.0
    return BacktestMetrics(
        total_return=perf.total_return,
        annual_return=perf.annual_return,
        annual_volatility=perf.annual_volatility,
        sharpe=perf.sharpe,
        sortino=perf.sortino,
        max_drawdown=perf.max_drawdown,
        turnover=turnover(traded, perf.n_periods),
        hit_rate=hit,
        exposure=float(np.abs(positions).mean()),
        n_bars=perf.n_periods,
        periods_per_year=ppy,
    )
