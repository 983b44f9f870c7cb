"""The walk-forward book: drift, turnover, costs, the drawdown stop's latch and cooldown, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.backtest.book import Book


def _book(cost: float = 0.0, stop: float = 0.2, cooldown: int | None = 3, n: int = 1) -> Book:
    return Book(n, cost=cost, drawdown_stop=stop, cooldown=cooldown)


def test_trade_costs_turnover_times_cost_of_equity() -> None:
    book = _book(cost=0.001, n=2)
    turnover = book.trade(np.array([0.5, -0.25]))
    assert turnover == pytest.approx(0.75)
    assert book.equity == pytest.approx(1.0 - 0.001 * 0.75)


def test_hold_earns_weights_times_returns_and_drifts_the_weights() -> None:
    book = _book(n=2)
    book.trade(np.array([0.5, 0.5]))
    gross = book.hold(np.array([0.10, -0.10]))
    assert gross == pytest.approx(0.0)
    np.testing.assert_allclose(book.weights, [0.55, 0.45])
    assert book.trade(np.array([0.5, 0.5])) == pytest.approx(0.10)  # rebalancing the drift is turnover


def test_full_single_position_does_not_drift() -> None:
    book = _book()
    book.trade(np.array([1.0]))
    book.hold(np.array([0.07]))
    assert book.trade(np.array([1.0])) == pytest.approx(0.0)
    assert book.equity == pytest.approx(1.07)


def test_decision_drawdown_latches_the_stop_then_resets_the_peak_after_cooldown() -> None:
    book = _book(stop=0.2, cooldown=3)
    book.trade(np.array([1.0]))
    book.hold(np.array([-0.25]))
    assert book.drawdown == pytest.approx(0.25)
    assert book.decision_drawdown(10) == pytest.approx(0.25)
    assert book.stop_bars == [10] and book.latched
    book.trade(np.array([0.0]))  # what decide does at the stop
    for bar in (11, 12):
        book.hold(np.array([0.05]))
        assert book.decision_drawdown(bar) >= 0.2
    book.hold(np.array([0.05]))  # third bar: the cooldown is over
    assert not book.latched
    assert book.decision_drawdown(13) == 0.0 and book.peak == pytest.approx(0.75)
    assert book.stop_bars == [10]


def test_decision_drawdown_without_cooldown_never_reenters() -> None:
    book = _book(stop=0.1, cooldown=None)
    book.trade(np.array([1.0]))
    book.hold(np.array([-0.2]))
    book.decision_drawdown(0)
    book.trade(np.array([0.0]))
    for bar in range(1, 50):
        book.hold(np.array([0.01]))
        assert book.decision_drawdown(bar) >= 0.1
    assert book.stop_bars == [0]


def test_decision_drawdown_reports_latched_stop_even_when_recovered() -> None:
    book = _book(stop=0.2, cooldown=5)
    book.trade(np.array([1.0]))
    book.hold(np.array([-0.3]))
    book.decision_drawdown(0)
    book.hold(np.array([0.5]))  # still holding (a rebalance-every-k book): the drawdown recovers
    assert book.drawdown < 0.2
    assert book.decision_drawdown(1) == pytest.approx(0.2)


def test_trade_pnls_split_a_flip_and_count_the_open_trade() -> None:
    book = _book(cost=0.01)
    book.trade(np.array([1.0]))           # open long: cost 0.01
    book.hold(np.array([0.10]))           # +0.099 (equity 0.99)
    book.trade(np.array([-0.5]))          # close long (cost 0.01 * 1.0 * 1.089), open short (0.01 * 0.5)
    equity_at_flip = 0.99 * 1.1
    book.hold(np.array([-0.02]))
    pnls = book.trade_pnls()
    assert len(pnls) == 2
    assert pnls[0] == pytest.approx(-0.01 + 0.099 - 0.01 * equity_at_flip)
    equity_after = equity_at_flip * (1 - 0.015)
    assert pnls[1] == pytest.approx(-0.01 * 0.5 * equity_at_flip + equity_after * 0.5 * 0.02)
