"""The account: marking, the two sizing rules, their costs and round trips, and the wipe-out."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantcrew.backtest.account import Account, Costs


def _prices(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_mark_grows_equity_by_weights_times_returns_and_drifts_the_weights() -> None:
    account = Account(2, costs=Costs(), sizing="weights")
    account.fill(0, _prices(1.0, 1.0), [0.5, 0.25])
    gross = account.mark(1, _prices(0.10, -0.20), _prices(1.1, 0.8))
    assert gross == pytest.approx(0.05 - 0.05)
    assert account.equity == pytest.approx(1.0)
    np.testing.assert_allclose(account.weights, [0.55, 0.2])


def test_units_sizing_is_whole_equity_after_commission_floored_to_lots() -> None:
    account = Account(1, costs=Costs(commission_bps=100.0, slippage_bps=50.0), initial_equity=1_000.0,
                      sizing="units", lot_size=1.0)
    traded = account.fill(0, _prices(10.0), [1.0])
    fill_price = 10.0 * 1.005
    units = math.floor(1_000.0 / (fill_price * 1.01))
    assert account.units[0] == units == 98
    commission = 0.01 * units * fill_price
    assert account.equity == pytest.approx(1_000.0 - units * (fill_price - 10.0) - commission)
    assert traded == pytest.approx(units * 10.0 / 1_000.0)
    assert account.weights[0] == pytest.approx(units * 10.0 / account.equity)


def test_units_sizing_trades_only_where_the_target_changes() -> None:
    account = Account(1, initial_equity=100.0, sizing="units")
    account.fill(0, _prices(10.0), [0.5])
    account.mark(1, _prices(0.2), _prices(12.0))
    held = account.units.copy()
    assert account.fill(1, _prices(12.0), [0.5]) == 0.0  # the same target: the drift is kept
    np.testing.assert_array_equal(account.units, held)
    account.fill(2, _prices(12.0), [0.0])
    (trade,) = account.trades
    assert (trade.entry_bar, trade.exit_bar, trade.entry_price, trade.exit_price) == (0, 2, 10.0, 12.0)
    assert account.equity == pytest.approx(100.0 + trade.pnl) and account.units[0] == 0.0


def test_weights_sizing_rebalances_to_the_targets_and_pays_cost_on_turnover() -> None:
    account = Account(2, costs=Costs(commission_bps=8.0, slippage_bps=2.0), sizing="weights")
    assert account.rate == pytest.approx(0.001)
    assert account.fill(0, _prices(1.0, 1.0), [0.6, -0.4]) == pytest.approx(1.0)
    assert account.equity == pytest.approx(1.0 - 0.001)
    np.testing.assert_array_equal(account.weights, [0.6, -0.4])
    account.mark(1, _prices(0.1, 0.0), _prices(1.1, 1.0))
    drifted = account.weights.copy()
    assert account.fill(1, _prices(1.1, 1.0), [0.6, -0.4]) == pytest.approx(float(np.abs(drifted - [0.6, -0.4]).sum()))


def test_both_sizings_mark_a_full_position_alike_and_differ_only_in_the_entry_cost() -> None:
    closes = np.array([100.0, 103.0, 99.0, 104.0, 104.5])
    units = Account(1, costs=Costs(commission_bps=10.0), sizing="units")
    weights = Account(1, costs=Costs(commission_bps=10.0), sizing="weights")
    units.fill(0, closes[:1], [1.0])
    weights.fill(0, closes[:1], [1.0])
    # units: commission on what is bought, c / (1 + c); weights: commission on the turnover, c
    assert 1.0 - units.equity == pytest.approx(0.001 / 1.001) and 1.0 - weights.equity == pytest.approx(0.001)
    assert units.weights[0] == pytest.approx(1.0) and weights.weights[0] == 1.0
    start_units, start_weights = units.equity, weights.equity
    for bar in range(1, closes.shape[0]):
        r = closes[bar:bar + 1] / closes[bar - 1:bar] - 1.0
        units.mark(bar, r, closes[bar:bar + 1])
        weights.mark(bar, r, closes[bar:bar + 1])
        assert units.equity / start_units == pytest.approx(weights.equity / start_weights, rel=1e-12)
        assert units.equity / start_units == pytest.approx(closes[bar] / closes[0], rel=1e-12)


def test_wiped_out_short_closes_its_position_and_holds_nothing() -> None:
    account = Account(1, initial_equity=100.0, sizing="units")
    account.fill(0, _prices(10.0), [-1.0])
    account.mark(1, _prices(1.5), _prices(25.0))  # +150%: the short loses more than the equity
    assert account.equity == 0.0 and account.units[0] == 0.0 and account.weights[0] == 0.0
    (trade,) = account.trades
    assert trade.exit_bar == 1 and trade.exit_price == 25.0 and trade.pnl == pytest.approx(-150.0)
    assert account.fill(2, _prices(20.0), [1.0]) == 0.0 and account.units[0] == 0.0  # nothing left to size


def test_wiped_out_weights_book_closes_its_round_trips() -> None:
    account = Account(1, sizing="weights")
    account.fill(0, _prices(1.0), [-1.0])
    account.mark(1, _prices(2.0), _prices(3.0))
    assert account.equity == 0.0 and account.trade_pnls() == [pytest.approx(-2.0)]


def test_open_trades_are_marked_at_the_last_price() -> None:
    account = Account(1, initial_equity=100.0, sizing="units")
    account.fill(0, _prices(10.0), [1.0])
    account.mark(1, _prices(0.1), _prices(11.0))
    (trade,) = account.open_trades()
    assert trade.is_open and (trade.exit_bar, trade.exit_price) == (1, 11.0)
    assert account.trade_pnls() == [pytest.approx(10.0)] and account.trades == []


def test_unknown_sizing_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="sizing"):
        Account(1, sizing="shares")  # type: ignore[arg-type]


def test_account_records_a_fill_per_weight_change() -> None:
    account = Account(2, costs=Costs(commission_bps=10.0), sizing="weights")
    account.fill(3, np.array([10.0, 20.0]), [0.5, 0.0])
    account.fill(4, np.array([11.0, 21.0]), [0.5, -0.25])
    assert [(f.bar, f.asset, f.price, f.before, f.after) for f in account.fills] == [
        (3, 0, 10.0, 0.0, 0.5), (4, 1, 21.0, 0.0, -0.25)]
    assert account.fills[0].cost == pytest.approx(0.001 * 0.5)
