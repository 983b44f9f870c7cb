"""The fill engine: when target positions are executed, and a single-instrument backtest on it.

:class:`Execution` steps an :class:`~quantcrew.backtest.account.Account` through price bars and
decides WHEN an order fills; the account decides HOW (sizing, costs, trades: see
:mod:`quantcrew.backtest.account`). Both :func:`run_backtest` and the walk-forward's book
(:mod:`quantcrew.backtest.book`) fill through it. At each bar ``t``, :meth:`Execution.advance`
marks the account to the close of ``t``, then :meth:`Execution.order` submits the targets
decided at that close:

* ``fill="next_open"`` (no look-ahead): the order is executed at ``open[t+1]``: the account is
  marked from ``close[t]`` to ``open[t+1]``, filled there, then marked to ``close[t+1]``; an
  order at the last bar is never executed.
* ``fill="close"``: the order is executed at ``close[t]`` itself (only honest when the decision
  is known before the close, e.g. market-on-close).

Stale opens: some daily files carry an "open" that is a copy of the previous close (the bundled
S&P 500 until 2007). Filling there would fill at the very close that made the signal. With
``stale_opens="next_close"`` (the walk-forward's choice), a next-open order whose fill bar has
``open == previous close`` on every asset is executed at that bar's CLOSE instead (one bar late,
never early); :attr:`Execution.late_fills` counts those fills. ``"trust"`` (the default of
:func:`run_backtest`, cross-checked against backtesting.py) fills at the open whatever it is.

:func:`run_backtest` conventions, on top of the account's ``"units"`` sizing (backtesting.py's
rule: a trade only where the target CHANGES, whole-equity sizing after commission, slippage and
commission on every fill, average-cost round trips):

* ``target[t]`` is the wanted position as a signed FRACTION OF EQUITY in [-1, 1]
  (1 = fully long, -1 = fully short, 0 = flat), decided at the close of bar ``t``;
* equity at bar ``t`` is the account's equity marked at ``close[t]`` (cash plus units held at
  that close; no interest, no margin calls: cash goes negative for a long position, above
  equity for a short one; a book that loses everything is wiped out, see the account);
* a position still open after the last bar is reported as a trade marked at the last close,
  with ``is_open=True`` and no exit cost.

Prices must be positive and finite; ``high`` and ``low`` are validated but fills only use
``open`` and ``close`` (market orders).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from quantcrew.backtest.account import Account, Costs, Trade
from quantcrew.backtest.stats import Stats, compute_stats
from quantcrew.quant.performance import period_returns

__all__ = ["BacktestResult", "Costs", "Execution", "Fill", "StaleOpens", "Trade", "filled_returns", "run_backtest"]

FloatArray = npt.NDArray[np.float64]
Fill = Literal["next_open", "close"]
StaleOpens = Literal["trust", "next_close"]
_FILLS = ("next_open", "close")
_STALE = ("trust", "next_close")


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Outcome of ``run_backtest``; arrays have one value per bar.

    Attributes:
        equity: Equity at each bar's close.
        returns: Per-bar simple returns (the first one from the initial cash).
        positions: Signed units held at each bar's close.
        trades: Round trips in order of exit.
        stats: Summary statistics.
        weights: Position value over equity at each close (the realised fraction of equity).
    """

    equity: FloatArray
    returns: FloatArray
    positions: FloatArray
    trades: list[Trade]
    stats: Stats
    weights: FloatArray = field(default_factory=lambda: np.zeros(0))


class Execution:
    """Steps an account through bars and fills its orders at the same close or the next open.

    Args:
        account: The account that is marked and filled.
        open_: Open prices, shape ``(bars,)`` or ``(bars, assets)``, positive and finite.
        close: Close prices, same shape.
        fill: ``"next_open"`` or ``"close"`` (module docstring).
        stale_opens: ``"trust"`` or ``"next_close"``: where a next-open order fills when the open
            is a copy of the previous close (module docstring).

    Attributes:
        traded: Per bar, the notional traded at that bar's fill over the equity before it.
        late_fills: Next-open orders filled at the next close because the open was stale.
    """

    def __init__(self, account: Account, open_: npt.ArrayLike, close: npt.ArrayLike, *,
                 fill: Fill = "next_open", stale_opens: StaleOpens = "trust") -> None:
        if fill not in _FILLS:
            raise ValueError(f"fill must be one of {_FILLS}, got {fill!r}")
        if stale_opens not in _STALE:
            raise ValueError(f"stale_opens must be one of {_STALE}, got {stale_opens!r}")
        self.account, self.fill = account, fill
        self._open, self._close = _columns(open_), _columns(close)
        first = np.zeros((1, self._close.shape[1]))
        self._close_to_close = np.vstack([first, self._close[1:] / self._close[:-1] - 1.0])
        self._stale = np.zeros(self._close.shape[0], dtype=bool)
        if fill == "next_open":
            self._gap = np.vstack([first, self._open[1:] / self._close[:-1] - 1.0])
            self._intraday = self._close / self._open - 1.0
            if stale_opens == "next_close":
                self._stale[1:] = np.all(self._open[1:] == self._close[:-1], axis=1)
        self._pending: FloatArray | None = None
        self.traded: FloatArray = np.zeros(self._close.shape[0])
        self.late_fills = 0

    def advance(self, bar: int) -> float:
        """Mark the account to the close of ``bar``, filling a pending order at its open on the way.

        Returns:
            The portfolio's return over the bar before the fill's costs.
        """
        if self._pending is None:
            return self.account.mark(bar, self._close_to_close[bar], self._close[bar])
        if self._stale[bar]:  # the open is the previous close again: fill one bar late, at this close
            gross = self.account.mark(bar, self._close_to_close[bar], self._close[bar])
            self.traded[bar] = self.account.fill(bar, self._close[bar], self._pending)
            self._pending = None
            self.late_fills += 1
            return gross
        gap = self.account.mark(bar, self._gap[bar], self._open[bar])
        self.traded[bar] = self.account.fill(bar, self._open[bar], self._pending)
        self._pending = None
        intraday = self.account.mark(bar, self._intraday[bar], self._close[bar])
        return (1.0 + gap) * (1.0 + intraday) - 1.0

    def order(self, bar: int, targets: npt.ArrayLike) -> float:
        """Submit the targets (signed fractions of equity, one per asset) decided at the close of ``bar``.

        Returns:
            What was traded now over the equity before it: the fill with ``fill="close"``, 0 with
            ``"next_open"`` (the fill shows in :attr:`traded` at the next bar).
        """
        target = np.array(targets, dtype=np.float64).reshape(self._close.shape[1])
        if self.fill == "next_open":
            self._pending = target
            return 0.0
        traded = self.account.fill(bar, self._close[bar], target)
        self.traded[bar] = traded
        return traded


def run_backtest(
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    target: npt.ArrayLike,
    *,
    fill: Fill = "next_open",
    costs: Costs = Costs(),  # noqa: B008 - frozen dataclass, immutable default
    initial_cash: float = 10_000.0,
    periods_per_year: int = 252,
    lot_size: float | None = None,
) -> BacktestResult:
    """Backtest a target-position series on one instrument (conventions in the module docstring).

    Args:
        open_: Open prices.
        high: High prices.
        low: Low prices.
        close: Close prices.
        target: Wanted position as a signed fraction of equity in [-1, 1], decided at each close.
        fill: ``"next_open"`` (execute at the next bar's open) or ``"close"`` (at the same close).
        costs: Commission and slippage.
        initial_cash: Equity before the first bar.
        periods_per_year: Bars per year, to annualise the statistics.
        lot_size: Round positions toward zero to a multiple of this many units (1 = whole
            units, as backtesting.py trades); None trades fractional units.

    Returns:
        Equity, returns, positions, trades and statistics.

    Raises:
        ValueError: ragged or empty inputs, non-positive or non-finite prices, a ``target`` that
            is not finite or leaves [-1, 1], or a bad ``fill``, ``initial_cash``,
            ``periods_per_year`` or ``lot_size`` (the message names it).
    """
    prices = {name: _as_prices(name, values) for name, values in
              (("open_", open_), ("high", high), ("low", low), ("close", close))}
    tgt = np.asarray(target, dtype=np.float64)
    _validate(prices, tgt, fill, initial_cash, periods_per_year, lot_size)
    n = tgt.shape[0]

    account = Account(1, costs=costs, initial_equity=float(initial_cash), sizing="units", lot_size=lot_size)
    execution = Execution(account, prices["open_"], prices["close"], fill=fill)
    changes = np.flatnonzero(tgt != np.concatenate(([0.0], tgt[:-1])))  # the account trades only on a change
    orders = dict(zip(changes.tolist(), tgt[changes].tolist(), strict=True))
    equity, units, weights = np.empty(n), np.empty(n), np.empty(n)
    for bar in range(n):
        execution.advance(bar)
        if bar in orders:
            execution.order(bar, [orders[bar]])
        equity[bar], units[bar], weights[bar] = account.equity, account.units[0], account.weights[0]

    trades = [*account.trades, *account.open_trades()]
    stats = compute_stats(equity, initial_cash=float(initial_cash), periods_per_year=periods_per_year,
                          trade_pnls=[t.pnl for t in trades], positions=units, traded_fraction=execution.traded)
    return BacktestResult(equity=equity, returns=period_returns(equity, float(initial_cash)), positions=units,
                          trades=trades, stats=stats, weights=weights)


def filled_returns(target: FloatArray, opens: FloatArray, closes: FloatArray, fill: Fill,
                   cost: float = 0.0) -> FloatArray:
    """Per-bar return of following ``target`` (decided at each close) as :class:`Execution` fills it.

    Weights are the targets themselves (no drift): what following a signal earned, bar ``t``'s
    return at ``[t]``, e.g. to reward a bandit that chose it.

    ``fill="close"``: ``target[t-1] * r[t]``. ``"next_open"``: ``target[t-2]`` from the close of
    ``t - 1`` to the open of ``t``, then ``target[t-1]`` to the close; on a stale open (a copy of
    the previous close) the fill waits for the close, so ``target[t-2] * r[t]``. With ``cost``
    (a fraction per unit of turnover), bar ``t`` also pays ``cost * |target[t-1] - target[t-2]|``:
    the change decided at the close before it.
    """
    out = np.zeros(closes.shape[0])
    r = np.zeros_like(out)
    r[1:] = closes[1:] / closes[:-1] - 1.0
    paid = np.zeros_like(out)
    paid[1:] = cost * np.abs(np.diff(np.concatenate(([0.0], target[:-1]))))
    if fill == "close":
        out[1:] = target[:-1] * r[1:]
        return out - paid
    before = np.concatenate(([0.0, 0.0], target[:-2]))[:closes.shape[0]]
    after = np.concatenate(([0.0], target[:-1]))
    gap = np.zeros_like(out)
    gap[1:] = opens[1:] / closes[:-1] - 1.0
    intraday = closes / opens - 1.0
    stale = np.zeros(closes.shape[0], dtype=bool)
    stale[1:] = opens[1:] == closes[:-1]
    out = np.where(stale, before * r, (1.0 + before * gap) * (1.0 + after * intraday) - 1.0)
    out[0] = 0.0
    return out - paid


def _columns(prices: npt.ArrayLike) -> FloatArray:
    array = np.asarray(prices, dtype=np.float64)
    return array[:, None] if array.ndim == 1 else array


def _as_prices(name: str, values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise ValueError(f"{name} must hold positive finite prices")
    return array


def _validate(prices: dict[str, FloatArray], target: FloatArray, fill: str, initial_cash: float,
              periods_per_year: int, lot_size: float | None) -> None:
    lengths = {name: array.shape[0] for name, array in prices.items()}
    if target.ndim != 1:
        raise ValueError(f"target must be 1-D, got shape {target.shape}")
    lengths["target"] = target.shape[0]
    if len(set(lengths.values())) != 1:
        raise ValueError(f"open_, high, low, close and target must have the same length, got {lengths}")
    if lengths["target"] == 0:
        raise ValueError("open_, high, low, close and target are empty")
    if not np.all(np.isfinite(target)):
        raise ValueError("target must be finite (found NaN or inf)")
    if np.any(np.abs(target) > 1.0):
        raise ValueError("target must be a fraction of equity in [-1, 1]")
    if fill not in _FILLS:
        raise ValueError(f"fill must be one of {_FILLS}, got {fill!r}")
    if not math.isfinite(initial_cash) or initial_cash <= 0:
        raise ValueError(f"initial_cash must be positive, got {initial_cash!r}")
    if isinstance(periods_per_year, bool) or not isinstance(periods_per_year, int) or periods_per_year <= 0:
        raise ValueError(f"periods_per_year must be a positive integer, got {periods_per_year!r}")
    if lot_size is not None and (not math.isfinite(lot_size) or lot_size <= 0):
        raise ValueError(f"lot_size must be positive or None, got {lot_size!r}")
