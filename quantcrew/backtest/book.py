"""The book of a walk-forward run: positions held as fractions of equity, costs, drawdown stop.

Conventions (every figure is a fraction of equity; equity starts at 1.0):

* **Holding.** Weights ``w`` set at the close of bar ``t`` earn ``w . r[t+1]`` over the next bar
  (``r`` = close-to-close simple returns), then drift with prices:
  ``w_i <- w_i (1 + r_i) / (1 + w . r)`` (a position left alone is not rebalanced).
* **Trading.** Moving to a target at a close trades ``turnover = sum_i |target_i - w_i|`` against
  the DRIFTED weights and pays ``cost * turnover`` of the equity at that close, so the bar's net
  return is ``(1 + w . r) (1 - cost * turnover) - 1``. Costs are paid from cash; the weights are
  the targets as decided.
* **Drawdown.** ``1 - equity / peak``, the peak being the highest equity so far (starting at the
  initial 1.0). The stop itself is :func:`quantcrew.crew.decision.decide`'s rule: every target is
  zero once the drawdown it is given reaches ``drawdown_stop``. A flat book's drawdown never
  recovers, so the book LATCHES a stop: from the bar it fires, the decision is given
  ``max(drawdown, drawdown_stop)`` for ``cooldown`` bars; then the peak is reset to the current
  equity (drawdown 0) and the strategy may re-enter. ``cooldown=None`` never re-enters.
* **Trades.** A round trip per asset runs from the bar its sign becomes non-zero to the bar it
  goes flat or flips; its PnL (in units of initial equity) is the sum of ``equity * w_i * r_i``
  over the bars held, less its share of the costs (the closing part of a flip goes to the old
  trade, the opening part to the new one). A position open at the end counts as a trade.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["Book"]

FloatArray = npt.NDArray[np.float64]


class Book:
    """Equity, weights, the drawdown stop's latch and the round trips of one simulated portfolio.

    Args:
        n_assets: Number of symbols.
        cost: Cost per unit of turnover, as a fraction (5 bp = 0.0005).
        drawdown_stop: The stop of the risk limits (the decision applies it; the book latches it).
        cooldown: Bars a fired stop stays latched before the peak is reset; None: forever.
    """

    def __init__(self, n_assets: int, *, cost: float, drawdown_stop: float, cooldown: int | None) -> None:
        self.cost = cost
        self.drawdown_stop = drawdown_stop
        self.cooldown = cooldown
        self.equity = 1.0
        self.peak = 1.0
        self.weights: FloatArray = np.zeros(n_assets)
        self.stop_bars: list[int] = []
        self.closed_pnls: list[float] = []
        self._latched_for: int | None = None  # bars left while a stop is latched (-1: forever)
        self._trade_pnl: FloatArray = np.zeros(n_assets)

    @property
    def drawdown(self) -> float:
        """Current drawdown from the peak, in [0, 1]."""
        return min(max(1.0 - self.equity / self.peak, 0.0), 1.0) if self.peak > 0 else 1.0

    @property
    def latched(self) -> bool:
        """True while a fired drawdown stop keeps the book flat."""
        return self._latched_for is not None

    def hold(self, returns: FloatArray) -> float:
        """Hold the weights over one bar of ``returns``; returns the gross portfolio return."""
        gross = float(self.weights @ returns)
        self._trade_pnl += self.equity * self.weights * returns
        growth = max(1.0 + gross, 0.0)
        self.weights = self.weights * (1.0 + returns) / growth if growth > 0 else np.zeros_like(self.weights)
        self.equity *= growth
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

    def trade(self, target: FloatArray) -> float:
        """Move to ``target`` at the close, paying the cost of the turnover; returns the turnover."""
        delta = np.abs(target - self.weights)
        turnover = float(delta.sum())
        for i, (old, new) in enumerate(zip(self.weights.tolist(), target.tolist(), strict=True)):
            old_sign, new_sign = _sign(old), _sign(new)
            if old_sign != 0 and new_sign != old_sign:  # close (and maybe reopen the other way)
                self.closed_pnls.append(float(self._trade_pnl[i]) - self.cost * abs(old) * self.equity)
                self._trade_pnl[i] = -self.cost * abs(new) * self.equity
            else:
                self._trade_pnl[i] -= self.cost * float(delta[i]) * self.equity
        self.equity *= 1.0 - self.cost * turnover
        self.weights = np.asarray(target, dtype=np.float64).copy()
        return turnover

    def trade_pnls(self) -> list[float]:
        """PnL of every round trip: the closed ones, then those still open."""
        open_ = [float(p) for p, w in zip(self._trade_pnl, self.weights, strict=True) if _sign(float(w)) != 0]
        return [*self.closed_pnls, *open_]


def _sign(x: float) -> int:
    return 0 if abs(x) <= 1e-12 or math.isnan(x) else (1 if x > 0 else -1)
