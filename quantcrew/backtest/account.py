"""The positions of a backtest and the fills that change them: the one place that turns target
positions into fills, costs, equity and trades.

An :class:`Account` holds ``n_assets`` positions as WEIGHTS (position value over equity) and its
equity. :class:`quantcrew.backtest.engine.Execution` decides when it is marked and when it fills;
the account does the arithmetic:

* **Marking.** Over a move of the prices by simple returns ``r`` (close to close, or close to
  open and open to close), the equity grows by ``1 + w . r`` and the weights drift:
  ``w_i <- w_i (1 + r_i) / (1 + w . r)`` (a position left alone is not rebalanced). Equity
  never falls below zero: a book that loses everything is wiped out, its positions closed at
  the mark at no cost, and it holds nothing afterwards (a loss beyond the equity is not owed).
* **Filling**, at the mark price, by one of two sizing rules:

  ``sizing="units"`` (backtesting.py's rule; :func:`~quantcrew.backtest.engine.run_backtest`):
    positions are units. An asset trades only where its target fraction CHANGES. Going from
    flat (or after a reversal, which closes first) to a fraction ``f``, the position is
    ``floor_lot(|f| * E / (price * (1 + commission)))`` units, ``E`` being the equity at the
    fill after paying for any units closed first and ``price`` the fill price after slippage,
    so a full-equity position plus its entry commission never exceeds the equity; a change of
    the same sign re-sizes with the same formula and trades only the difference. Slippage moves
    the fill price against the trade (``price * (1 +/- slippage)``); commission is
    ``commission * |units| * fill price``, paid at every fill. Trades are round trips,
    average-cost: adding to a position merges into the open trade (volume-weighted entry price),
    reducing it closes a part as its own trade.

  ``sizing="weights"`` (the walk-forward's book): positions are fractions of equity. Every
    fill moves to the targets, trading ``turnover = sum_i |target_i - w_i|`` against the DRIFTED
    weights and paying ``(commission + slippage) * turnover`` of the equity at the fill; the
    weights are then the targets as decided (costs are paid from cash). A round trip per asset
    runs from the fill its sign becomes non-zero to the fill it goes flat or flips; its PnL is
    the sum of ``equity * w_i * r_i`` over the marks it was held, less its share of the costs
    (the closing part of a flip goes to the old trade, the opening part to the new one).

Either way, a fill returns the traded notional over the equity before it (the turnover the
statistics annualise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Account", "Costs", "FillRecord", "Sizing", "Trade"]

FloatArray = npt.NDArray[np.float64]
Sizing = Literal["units", "weights"]
_SIZINGS = ("units", "weights")


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


@dataclass(frozen=True, slots=True)
class FillRecord:
    """One asset's move to a new weight at a fill (``"weights"`` sizing): the book's blotter line.

    Attributes:
        bar: Index of the bar the fill happened in.
        asset: Column of the asset.
        price: The price filled at (open or close of ``bar``).
        before: Weight held just before the fill (drifted since the last one).
        after: Weight after it.
        cost: Cost paid, as a fraction of the equity before the fill.
    """

    bar: int
    asset: int
    price: float
    before: float
    after: float
    cost: float


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


class Account:
    """Equity and positions of ``n_assets`` assets, marked to market and filled (module docstring).

    Args:
        n_assets: Number of assets.
        costs: Commission and slippage.
        initial_equity: Equity before the first fill.
        sizing: ``"units"`` (backtesting.py's rule) or ``"weights"`` (fractions of equity).
        lot_size: With ``"units"``: round positions toward zero to a multiple of this many units
            (1 = whole units); None trades fractional units.

    Attributes:
        equity: Equity at the last mark or fill.
        weights: Position value over equity, per asset.
        units: Units held per asset (``"units"`` sizing; zeros otherwise).
        trades: Round trips closed so far (``"units"`` sizing).
        fills: Every change of an asset's weight (``"weights"`` sizing), in order.
    """

    def __init__(self, n_assets: int, *, costs: Costs = Costs(),  # noqa: B008 - frozen, immutable default
                 initial_equity: float = 1.0, sizing: Sizing = "weights", lot_size: float | None = None) -> None:
        if sizing not in _SIZINGS:
            raise ValueError(f"sizing must be one of {_SIZINGS}, got {sizing!r}")
        self.costs, self.sizing, self.lot_size = costs, sizing, lot_size
        self.rate = costs.commission + costs.slippage  # cost per unit of turnover ("weights")
        self.equity = float(initial_equity)
        self.weights: FloatArray = np.zeros(n_assets)
        self.units: FloatArray = np.zeros(n_assets)
        self.trades: list[Trade] = []
        self.fills: list[FillRecord] = []
        self._bar = 0
        self._prices: FloatArray = np.ones(n_assets)
        self._targets: FloatArray = np.zeros(n_assets)  # "units": the last target filled, per asset
        self._entry_bar = [-1] * n_assets
        self._entry_price = [0.0] * n_assets
        self._entry_commission = [0.0] * n_assets
        self._closed_pnls: list[float] = []  # "weights": PnL of the round trips closed so far
        self._trip_pnl: FloatArray = np.zeros(n_assets)  # "weights": PnL of each open round trip

    # -- marking ---------------------------------------------------------------------------------

    def mark(self, bar: int, returns: FloatArray, prices: FloatArray) -> float:
        """Move the prices by ``returns`` (to ``prices``, at ``bar``); returns the portfolio return ``w . r``."""
        self._bar, self._prices = bar, prices
        gross = float(self.weights @ returns)
        if self.sizing == "weights":
            self._trip_pnl += self.equity * self.weights * returns
        growth = max(1.0 + gross, 0.0)
        if growth > 0:
            self.weights = self.weights * (1.0 + returns) / growth
            self.equity *= growth
        else:
            self._wipe_out()
        return gross

    def _wipe_out(self) -> None:
        for i in np.flatnonzero(self.units).tolist():
            self._close(i, float(self._prices[i]), float(self.units[i]), costly=False)
        self._closed_pnls.extend(float(p) for p, w in zip(self._trip_pnl, self.weights, strict=True) if _sign(w))
        self.equity = 0.0
        self.weights = np.zeros_like(self.weights)
        self._trip_pnl = np.zeros_like(self._trip_pnl)

    # -- filling ---------------------------------------------------------------------------------

    def fill(self, bar: int, prices: FloatArray, targets: npt.ArrayLike) -> float:
        """Move to the ``targets`` (signed fractions of equity) at the mark ``prices``.

        Returns:
            The traded notional over the equity before the fill (0 when the equity is gone).
        """
        self._bar, self._prices = bar, prices
        target = np.asarray(targets, dtype=np.float64)
        if self.sizing == "weights":
            return self._rebalance(target)
        changed = np.flatnonzero(target != self._targets).tolist()
        if not changed:
            return 0.0
        equity_before = self.equity
        traded = 0.0
        for i in changed:
            traded += self._resize(i, float(prices[i]), float(target[i]))
        self._targets = target.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            self.weights = np.where(self.units != 0.0, self.units * prices / self.equity, 0.0)
        return traded / equity_before if equity_before > 0 else 0.0

    def _rebalance(self, target: FloatArray) -> float:
        delta = np.abs(target - self.weights)
        turnover = float(delta.sum())
        for i, (old, new) in enumerate(zip(self.weights.tolist(), target.tolist(), strict=True)):
            if delta[i] > 0.0:
                self.fills.append(FillRecord(bar=self._bar, asset=i, price=float(self._prices[i]), before=old,
                                             after=new, cost=self.rate * float(delta[i])))
            old_sign, new_sign = _sign(old), _sign(new)
            if old_sign != 0 and new_sign != old_sign:  # close (and maybe reopen the other way)
                self._closed_pnls.append(float(self._trip_pnl[i]) - self.rate * abs(old) * self.equity)
                self._trip_pnl[i] = -self.rate * abs(new) * self.equity
            else:
                self._trip_pnl[i] -= self.rate * float(delta[i]) * self.equity
        self.equity *= 1.0 - self.rate * turnover
        self.weights = target.copy()
        return turnover

    def _resize(self, i: int, price: float, fraction: float) -> float:
        """Move asset ``i`` to ``fraction`` of equity in units; returns the notional traded."""
        traded = 0.0
        held = float(self.units[i])
        if held != 0.0 and (fraction == 0.0 or math.copysign(1.0, fraction) != math.copysign(1.0, held)):
            traded += abs(held) * price
            self._close(i, price, held)
        if fraction == 0.0:
            return traded
        held = float(self.units[i])
        delta = self._size_for(fraction, price) - held
        if delta != 0.0:
            traded += abs(delta) * price
            if held == 0.0 or math.copysign(1.0, delta) == math.copysign(1.0, held):
                self._open(i, price, delta)
            else:
                self._close(i, price, -delta)
        return traded

    def _fill_price(self, price: float, side: float) -> float:
        return price * (1.0 + self.costs.slippage * side)

    def _size_for(self, fraction: float, price: float) -> float:
        """Signed units for ``fraction`` of the equity at ``price``, after the entry commission."""
        side = math.copysign(1.0, fraction)
        units = abs(fraction) * self.equity / (self._fill_price(price, side) * (1.0 + self.costs.commission))
        if self.lot_size is not None:
            units = math.floor(units / self.lot_size) * self.lot_size
        return side * max(units, 0.0)

    def _open(self, i: int, price: float, units: float) -> None:
        """Add ``units`` (same sign as the position, or any sign when flat) to asset ``i`` at ``price``."""
        fill = self._fill_price(price, math.copysign(1.0, units))
        commission = self.costs.commission * abs(units) * fill
        self.equity += units * (price - fill) - commission
        held = float(self.units[i])
        if held == 0.0:
            self._entry_bar[i], self._entry_price[i] = self._bar, fill
        else:
            self._entry_price[i] = (self._entry_price[i] * held + fill * units) / (held + units)
        self._entry_commission[i] += commission
        self.units[i] = held + units

    def _close(self, i: int, price: float, units: float, *, costly: bool = True) -> None:
        """Close ``units`` (same sign as the position) of asset ``i`` at ``price``, recording a trade."""
        exit_price = self._fill_price(price, -math.copysign(1.0, units)) if costly else price
        exit_commission = self.costs.commission * abs(units) * exit_price if costly else 0.0
        self.equity += units * (exit_price - price) - exit_commission
        held = float(self.units[i])
        entry_commission = self._entry_commission[i] * (units / held)
        self.trades.append(_trade(self._entry_bar[i], self._bar, self._entry_price[i], exit_price, units,
                                  entry_commission + exit_commission))
        self._entry_commission[i] -= entry_commission
        self.units[i] = held - units
        if self.units[i] == 0.0:
            self._entry_bar[i], self._entry_price[i], self._entry_commission[i] = -1, 0.0, 0.0

    # -- round trips -----------------------------------------------------------------------------

    def open_trades(self) -> list[Trade]:
        """Positions still held (``"units"`` sizing), as trades marked at the last price, ``is_open=True``."""
        return [_trade(self._entry_bar[i], self._bar, self._entry_price[i], float(self._prices[i]),
                       float(self.units[i]), self._entry_commission[i], is_open=True)
                for i in np.flatnonzero(self.units).tolist()]

    def trade_pnls(self) -> list[float]:
        """Net PnL of every round trip: the closed ones, then those still open."""
        if self.sizing == "units":
            return [t.pnl for t in (*self.trades, *self.open_trades())]
        open_ = [float(p) for p, w in zip(self._trip_pnl, self.weights, strict=True) if _sign(float(w)) != 0]
        return [*self._closed_pnls, *open_]


def _trade(entry_bar: int, exit_bar: int, entry: float, exit_: float, units: float, commission: float,
           *, is_open: bool = False) -> Trade:
    gross = units * (exit_ - entry)
    ret = math.copysign(1.0, units) * (exit_ / entry - 1.0) - commission / (abs(units) * entry)
    return Trade(entry_bar=entry_bar, exit_bar=exit_bar, entry_price=entry, exit_price=exit_, size=units,
                 pnl=gross - commission, return_pct=ret, commission=commission, is_open=is_open)


def _sign(x: float) -> int:
    return 0 if abs(x) <= 1e-12 or math.isnan(x) else (1 if x > 0 else -1)
