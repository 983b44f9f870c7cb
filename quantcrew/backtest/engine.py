"""A vectorised single-instrument backtest of a target-position series.

Conventions:
    * ``target[t]`` is the wanted position as a signed FRACTION OF EQUITY in [-1, 1]
      (1 = fully long, -1 = fully short, 0 = flat), decided at the close of bar ``t``.
    * ``fill="next_open"`` (default, no look-ahead): it is executed at ``open[t+1]`` and held
      from bar ``t+1``'s close on; ``target[-1]`` is never executed. ``fill="close"`` executes
      at ``close[t]`` (only honest when the decision is known before the close).
    * A trade happens only where the target CHANGES; while it stays the same the units bought
      are held (no daily rebalancing back to the fraction).
    * Sizing: going from flat (or after a reversal) to a target ``f``, the position is
      ``floor_lot(|f| * E / (price * (1 + commission)))`` units, ``E`` being the equity at the
      fill after paying for any units closed first, and ``price`` the fill price after slippage:
      a full-equity position plus its entry commission never exceeds the equity. This is the
      rule of backtesting.py (with ``lot_size=1``, its whole-unit sizing). A change to a
      target of the same sign re-sizes with the same formula and trades only the difference.
    * Costs, per unit of traded notional: slippage moves the fill price against the trade
      (``price * (1 +/- slippage)``); commission is ``commission * |units| * fill price``,
      paid at every fill (entry and exit).
    * Equity at bar ``t`` is cash plus units held at ``close[t]`` (cash goes negative for a
      long position, above equity for a short one: no interest, no margin calls).
    * Trades are round trips, average-cost: adding to a position merges into the open trade
      (volume-weighted entry price); reducing it closes a part as its own trade. A position
      still open after the last bar is reported as a trade marked at the last close, with
      ``is_open=True`` and no exit cost.

Prices must be positive and finite; ``high`` and ``low`` are validated but fills only use
``open`` and ``close`` (market orders).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from quantcrew.backtest.stats import Stats, compute_stats

__all__ = ["BacktestResult", "Costs", "Trade", "run_backtest"]

FloatArray = npt.NDArray[np.float64]
Fill = Literal["next_open", "close"]
_FILLS = ("next_open", "close")


@dataclass(frozen=True)
class Costs:
    """Trading costs in basis points of traded notional.

    Attributes:
        commission_bps: Commission per unit of traded notional (10 = 0.1%), paid on entry and exit.
        slippage_bps: Adverse fill-price move (buys fill higher, sells lower).
    """

    commission_bps: float = 0.0
    slippage_bps: float = 0.0

    def __post_init__(self) -> None:
        for name in ("commission_bps", "slippage_bps"):
            value = getattr(self, name)
            if not math.isfinite(value) or not 0.0 <= value < 10_000.0:
                raise ValueError(f"{name} must be finite and in [0, 10000), got {value!r}")

    @property
    def commission(self) -> float:
        """Commission as a fraction of notional."""
        return self.commission_bps / 10_000.0

    @property
    def slippage(self) -> float:
        """Slippage as a fraction of price."""
        return self.slippage_bps / 10_000.0


@dataclass(frozen=True)
class Trade:
    """One round trip (or the part of a position closed at once).

    Attributes:
        entry_bar: Index of the bar whose fill opened the position.
        exit_bar: Index of the bar whose fill closed it (the last bar when still open).
        entry_price: Fill price at entry, slippage included (average when added to).
        exit_price: Fill price at exit, slippage included (the last close when still open).
        size: Signed units (positive long, negative short).
        pnl: Net profit, commissions of entry and exit deducted.
        return_pct: ``sign(size) * (exit / entry - 1) - commission / (|size| * entry)``, a fraction.
        commission: Commission paid on this trade's entry and exit.
        is_open: True for a position still held after the last bar.
    """

    entry_bar: int
    exit_bar: int
    entry_price: float
    exit_price: float
    size: float
    pnl: float
    return_pct: float
    commission: float
    is_open: bool = False


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


@dataclass
class _Book:
    """Mutable state of the simulation: cash, units and the open trade."""

    cash: float
    commission: float
    slippage: float
    lot_size: float | None
    units: float = 0.0
    entry_bar: int = -1
    entry_price: float = 0.0
    entry_commission: float = 0.0
    trades: list[Trade] = field(default_factory=list)

    def fill_price(self, price: float, side: float) -> float:
        return price * (1.0 + self.slippage * side)

    def close(self, bar: int, price: float, units: float) -> None:
        """Close ``units`` (same sign as the position) at ``price``, recording a trade."""
        exit_price = self.fill_price(price, -math.copysign(1.0, units))
        exit_commission = self.commission * abs(units) * exit_price
        self.cash += units * exit_price - exit_commission
        share = units / self.units
        entry_commission = self.entry_commission * share
        self.trades.append(_trade(self.entry_bar, bar, self.entry_price, exit_price, units,
                                  entry_commission + exit_commission))
        self.entry_commission -= entry_commission
        self.units -= units
        if self.units == 0.0:
            self.entry_bar, self.entry_price, self.entry_commission = -1, 0.0, 0.0

    def open(self, bar: int, price: float, units: float) -> None:
        """Add ``units`` (same sign as the position, or any sign when flat) at ``price``."""
        fill = self.fill_price(price, math.copysign(1.0, units))
        commission = self.commission * abs(units) * fill
        self.cash -= units * fill + commission
        if self.units == 0.0:
            self.entry_bar, self.entry_price = bar, fill
        else:
            self.entry_price = (self.entry_price * self.units + fill * units) / (self.units + units)
        self.entry_commission += commission
        self.units += units

    def size_for(self, fraction: float, price: float) -> float:
        """Signed units for ``fraction`` of the equity at ``price``, after the entry commission."""
        side = math.copysign(1.0, fraction)
        equity = self.cash + self.units * price
        units = abs(fraction) * equity / (self.fill_price(price, side) * (1.0 + self.commission))
        if self.lot_size is not None:
            units = math.floor(units / self.lot_size) * self.lot_size
        return side * max(units, 0.0)

    def rebalance(self, bar: int, price: float, fraction: float) -> float:
        """Move to ``fraction`` of equity at ``price``; returns the notional traded."""
        traded = 0.0
        if self.units != 0.0 and (fraction == 0.0 or math.copysign(1.0, fraction) != math.copysign(1.0, self.units)):
            traded += abs(self.units) * price
            self.close(bar, price, self.units)
        if fraction == 0.0:
            return traded
        delta = self.size_for(fraction, price) - self.units
        if delta != 0.0:
            traded += abs(delta) * price
            if self.units == 0.0 or math.copysign(1.0, delta) == math.copysign(1.0, self.units):
                self.open(bar, price, delta)
            else:
                self.close(bar, price, -delta)
        return traded


def _trade(entry_bar: int, exit_bar: int, entry: float, exit_: float, units: float, commission: float,
           *, is_open: bool = False) -> Trade:
    gross = units * (exit_ - entry)
    ret = math.copysign(1.0, units) * (exit_ / entry - 1.0) - commission / (abs(units) * entry)
    return Trade(entry_bar=entry_bar, exit_bar=exit_bar, entry_price=entry, exit_price=exit_, size=units,
                 pnl=gross - commission, return_pct=ret, commission=commission, is_open=is_open)


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
    opens, closes = prices["open_"], prices["close"]
    n = closes.shape[0]

    if fill == "next_open":
        wanted = np.concatenate(([0.0], tgt[:-1]))
        fill_px = opens
    else:
        wanted, fill_px = tgt, closes
    previous = np.concatenate(([0.0], wanted[:-1]))
    fill_bars = np.flatnonzero(wanted != previous)

    book = _Book(cash=float(initial_cash), commission=costs.commission, slippage=costs.slippage, lot_size=lot_size)
    cash_after = np.empty(fill_bars.shape[0])
    units_after = np.empty(fill_bars.shape[0])
    traded_fraction = np.empty(fill_bars.shape[0])
    for k, bar in enumerate(fill_bars.tolist()):
        price = float(fill_px[bar])
        equity_before = book.cash + book.units * price
        notional = book.rebalance(bar, price, float(wanted[bar]))
        traded_fraction[k] = notional / equity_before if equity_before > 0 else 0.0
        cash_after[k], units_after[k] = book.cash, book.units

    # Cash and units are piecewise constant between fills: spread them over the bars at once.
    segment = np.searchsorted(fill_bars, np.arange(n), side="right") - 1
    has_fill = segment >= 0
    units = np.where(has_fill, units_after[np.maximum(segment, 0)] if fill_bars.size else 0.0, 0.0)
    cash = np.where(has_fill, cash_after[np.maximum(segment, 0)] if fill_bars.size else 0.0, float(initial_cash))
    equity = cash + units * closes

    trades = list(book.trades)
    if book.units != 0.0:
        last = float(closes[-1])
        trades.append(_trade(book.entry_bar, n - 1, book.entry_price, last, book.units, book.entry_commission,
                             is_open=True))
    stats = compute_stats(equity, initial_cash=float(initial_cash), periods_per_year=periods_per_year,
                          trade_pnls=[t.pnl for t in trades], positions=units, traded_fraction=traded_fraction)
    returns = np.concatenate(([float(initial_cash)], equity[:-1]))
    returns = equity / returns - 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = np.where(equity != 0.0, units * closes / equity, 0.0)
    return BacktestResult(equity=equity, returns=returns, positions=units, trades=trades, stats=stats,
                          weights=weights)


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
