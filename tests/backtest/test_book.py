"""The walk-forward book: drift, turnover, costs, the drawdown stop's latch and cooldown, round trips."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from quantcrew.backtest.account import Account, Costs
from quantcrew.backtest.book import Book
from quantcrew.backtest.engine import Execution


def _book(returns: Sequence[float] | Sequence[Sequence[float]] = (), cost_bps: float = 0.0, stop: float = 0.2,
          cooldown: int | None = 3, n: int = 1) -> Book:
    """A book filled at the close of prices that move by ``returns[t - 1]`` from bar ``t - 1`` to ``t``."""
    moves = np.asarray(returns, dtype=np.float64).reshape(-1, n)
    closes = np.vstack([np.ones((1, n)), np.cumprod(1.0 + moves, axis=0)])
    account = Account(n, costs=Costs(commission_bps=cost_bps), sizing="weights")
    return Book(Execution(account, closes, closes, fill="close"), drawdown_stop=stop, cooldown=cooldown)


def test_trade_costs_turnover_times_cost_of_equity() -> None:
    book = _book(cost_bps=10.0, n=2)
    turnover = book.trade(0, np.array([0.5, -0.25]))
    assert turnover == pytest.approx(0.75)
    assert book.equity == pytest.approx(1.0 - 0.001 * 0.75)
    assert book.cost == 0.001


def test_hold_earns_weights_times_returns_and_drifts_the_weights() -> None:
    book = _book([[0.10, -0.10]], n=2)
    book.trade(0, np.array([0.5, 0.5]))
    gross = book.hold(1)
    assert gross == pytest.approx(0.0, abs=1e-15)
    np.testing.assert_allclose(book.weights, [0.55, 0.45])
    assert book.trade(1, np.array([0.5, 0.5])) == pytest.approx(0.10)  # rebalancing the drift is turnover


def test_full_single_position_does_not_drift() -> None:
    book = _book([0.07])
    book.trade(0, np.array([1.0]))
    book.hold(1)
    assert book.trade(1, np.array([1.0])) == pytest.approx(0.0, abs=1e-15)
    assert book.equity == pytest.approx(1.07)


def test_book_needs_an_account_in_fractions_of_equity() -> None:
    closes = np.ones((2, 1))
    execution = Execution(Account(1, sizing="units"), closes, closes, fill="close")
    with pytest.raises(ValueError, match="sizing='weights'"):
        Book(execution, drawdown_stop=0.2, cooldown=3)


def test_decision_drawdown_latches_the_stop_then_resets_the_peak_after_cooldown() -> None:
    book = _book([-0.25, 0.05, 0.05, 0.05], stop=0.2, cooldown=3)
    book.trade(0, np.array([1.0]))
    book.hold(1)
    assert book.drawdown == pytest.approx(0.25)
    assert book.decision_drawdown(1) == pytest.approx(0.25)
    assert book.stop_bars == [1] and book.latched
    book.trade(1, np.array([0.0]))  # what decide does at the stop
    for bar in (2, 3):
        book.hold(bar)
        assert book.decision_drawdown(bar) >= 0.2
    book.hold(4)  # third bar: the cooldown is over
    assert not book.latched
    assert book.decision_drawdown(4) == 0.0 and book.peak == pytest.approx(0.75)
    assert book.stop_bars == [1]


def test_decision_drawdown_without_cooldown_never_reenters() -> None:
    book = _book([-0.2] + [0.01] * 49, stop=0.1, cooldown=None)
    book.trade(0, np.array([1.0]))
    book.hold(1)
    book.decision_drawdown(1)
    book.trade(1, np.array([0.0]))
    for bar in range(2, 51):
        book.hold(bar)
        assert book.decision_drawdown(bar) >= 0.1
    assert book.stop_bars == [1]


def test_decision_drawdown_reports_latched_stop_even_when_recovered() -> None:
    book = _book([-0.3, 0.5], stop=0.2, cooldown=5)
    book.trade(0, np.array([1.0]))
    book.hold(1)
    book.decision_drawdown(1)
    book.hold(2)  # still holding (a rebalance-every-k book): the drawdown recovers
    assert book.drawdown < 0.2
    assert book.decision_drawdown(2) == pytest.approx(0.2)


def test_trade_pnls_split_a_flip_and_count_the_open_trade() -> None:
    book = _book([0.10, -0.02], cost_bps=100.0)
    book.trade(0, np.array([1.0]))        # open long: cost 0.01
    book.hold(1)                          # +0.099 (equity 0.99)
    book.trade(1, np.array([-0.5]))       # close long (cost 0.01 * 1.0 * 1.089), open short (0.01 * 0.5)
    equity_at_flip = 0.99 * 1.1
    book.hold(2)
    pnls = book.trade_pnls()
    assert len(pnls) == 2
    assert pnls[0] == pytest.approx(-0.01 + 0.099 - 0.01 * equity_at_flip)
    equity_after = equity_at_flip * (1 - 0.015)
    assert pnls[1] == pytest.approx(-0.01 * 0.5 * equity_at_flip + equity_after * 0.5 * 0.02)
