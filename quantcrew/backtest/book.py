"""The book of a walk-forward run: the engine's account in fractions of equity, and the drawdown stop.

Fills, costs, equity and round trips are the engine's (:mod:`quantcrew.backtest.account`,
``sizing="weights"``; :class:`~quantcrew.backtest.engine.Execution` decides when orders fill).
In short, every figure a fraction of equity, equity starting at 1.0:

* **Holding.** Weights ``w`` set at a fill earn ``w . r`` over the next move of the prices
  (``r`` = simple returns), then drift with them.
* **Trading.** Moving to a target trades ``turnover = sum_i |target_i - w_i|`` against the
  DRIFTED weights and pays ``cost * turnover`` of the equity at the fill; with fills at the
  close (the walk-forward's), a bar's net return is ``(1 + w . r) (1 - cost * turnover) - 1``.
* **Trades.** A round trip per asset runs from the fill its sign becomes non-zero to the fill
  it goes flat or flips; a position open at the end counts as a trade.

What the book adds is the **drawdown** stop's latch. Drawdown is ``1 - equity / peak``, the
peak being the highest equity so far (starting at the initial 1.0). The stop itself is
:func:`quantcrew.crew.decision.decide`'s rule: every target is zero once the drawdown it is
given reaches ``drawdown_stop``. A flat book's drawdown never recovers, so the book LATCHES a
stop: from the bar it fires, the decision is given ``max(drawdown, drawdown_stop)`` for
``cooldown`` bars; then the peak is reset to the current equity (drawdown 0) and the strategy
may re-enter. ``cooldown=None`` never re-enters.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from quantcrew.backtest.engine import Execution

__all__ = ["Book"]

FloatArray = npt.NDArray[np.float64]


class Book:
    """Equity, weights, round trips and the drawdown stop's latch of one simulated portfolio.

    Args:
        execution: The engine's execution of an account with ``sizing="weights"``.
        drawdown_stop: The stop of the risk limits (the decision applies it; the book latches it).
        cooldown: Bars a fired stop stays latched before the peak is reset; None: forever.
    """

    def __init__(self, execution: Execution, *, drawdown_stop: float, cooldown: int | None) -> None:
        if execution.account.sizing != "weights":
            raise ValueError("the book holds fractions of equity: its account needs sizing='weights'")
        self.execution = execution
        self.account = execution.account
        self.drawdown_stop = drawdown_stop
        self.cooldown = cooldown
        self.peak = self.account.equity
        self.stop_bars: list[int] = []
        self._latched_for: int | None = None  # bars left while a stop is latched (-1: forever)

    @property
    def equity(self) -> float:
        """Current equity (1.0 at the start)."""
        return self.account.equity

    @property
    def weights(self) -> FloatArray:
        """Current position value over equity, per asset."""
        return self.account.weights

    @property
    def cost(self) -> float:
        """Cost per unit of turnover, as a fraction."""
        return self.account.rate

    @property
    def drawdown(self) -> float:
        """Current drawdown from the peak, in [0, 1]."""
        return min(max(1.0 - self.equity / self.peak, 0.0), 1.0) if self.peak > 0 else 1.0

    @property
    def latched(self) -> bool:
        """True while a fired drawdown stop keeps the book flat."""
        return self._latched_for is not None

    def hold(self, bar: int) -> float:
        """Hold the positions up to the close of ``bar``; returns the gross portfolio return."""
        gross = self.execution.advance(bar)
        self.peak = max(self.peak, self.equity)
        if self._latched_for is not None and self._latched_for > 0:
            self._latched_for -= 1
            if self._latched_for == 0:  # cooldown over: a new peak from here, the strategy may re-enter
                self._latched_for = None
                self.peak = self.equity
        return gross

    def decision_drawdown(self, bar: int) -> float:
        """The drawdown to give the decision at ``bar``; fires and latches the stop when it is reached."""
        drawdown = self.drawdown
        if self._latched_for is None and drawdown >= self.drawdown_stop:
            self._latched_for = -1 if self.cooldown is None else self.cooldown
            self.stop_bars.append(bar)
        if self._latched_for is not None:
            return max(drawdown, self.drawdown_stop)
        return drawdown

    def trade(self, bar: int, target: npt.ArrayLike) -> float:
        """Order ``target`` at the close of ``bar``; returns the turnover filled now."""
        return self.execution.order(bar, target)

    def trade_pnls(self) -> list[float]:
        """PnL of every round trip: the closed ones, then those still open."""
        return self.account.trade_pnls()
