"""The backtest engine, cross-checked against backtesting.py on the real S&P 500 sample.

Settings that make backtesting.py (0.6.6) trade exactly like ``run_backtest(..., fill="next_open",
lot_size=1)``:

* ``Backtest(df, strategy, cash=10_000, commission=c, spread=0.0, margin=1.0, trade_on_close=False,
  hedging=False, exclusive_orders=True, finalize_trades=False)``: market orders fill at the next
  bar's open, a new order first closes the opposite position (whose proceeds size the new one),
  commission ``c`` is a fraction of notional charged at entry and exit (= ``Costs(commission_bps=c * 1e4)``);
* orders are placed with ``buy()`` / ``sell()`` without a size, i.e. all of the available equity,
  which backtesting.py floors to whole units after the entry commission: ``lot_size=1`` here;
* backtesting.py calls ``next()`` for the first time on bar 30 (after the 29 bars of SMA30
  warm-up), so our target is forced flat up to bar 29;
* both strategies exit at the close of bar n-2 (filled at the open of the last bar), so no trade
  is left open and ``finalize_trades`` is not needed.

Backtesting.py's Sharpe and Sortino annualise geometric returns; ours are arithmetic (see
``quantcrew.quant.performance``). So (a) our statistics are recomputed from backtesting.py's own
equity curve with our formulas and compared, and (b) its reported Sharpe / Sortino / returns are
recomputed from OUR equity curve with its formulas (re-implemented below) and compared.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.backtest import Account, Costs, Execution, compute_stats, run_backtest
from quantcrew.backtest.engine import Fill, filled_returns
from quantcrew.data import load_sample

RTOL = 1e-6
FAST, SLOW = 10, 30


def _sma(x: np.ndarray, window: int) -> np.ndarray:
    out = np.full(x.shape[0], np.nan)
    csum = np.cumsum(np.concatenate(([0.0], x)))
    out[window - 1:] = (csum[window:] - csum[:-window]) / window
    return out


def _sma_target(close: np.ndarray, *, long_short: bool) -> np.ndarray:
    fast, slow = _sma(close, FAST), _sma(close, SLOW)
    with np.errstate(invalid="ignore"):
        up = fast > slow
    target = np.where(up, 1.0, -1.0 if long_short else 0.0)
    target[:SLOW] = 0.0  # backtesting.py's first decision is on bar SLOW (after its warm-up)
    target[-2:] = 0.0  # exit at the close of bar n-2, filled at the last open
    return target


@pytest.fixture(scope="module")
def sp500() -> Any:
    return load_sample("SP500")


def _run_backtesting_py(bars: Any, *, long_short: bool, commission: float) -> Any:
    backtesting = pytest.importorskip("backtesting")
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(
        {"Open": bars.open, "High": bars.high, "Low": bars.low, "Close": bars.close, "Volume": bars.volume},
        index=pd.DatetimeIndex(bars.timestamps),
    )
    n = len(bars)

    def rolling_mean(values: Any, window: int) -> Any:
        return pd.Series(values).rolling(window).mean()

    class SmaCross(backtesting.Strategy):  # type: ignore[misc, name-defined]
        def init(self) -> None:
            self.fast = self.I(rolling_mean, self.data.Close, FAST)
            self.slow = self.I(rolling_mean, self.data.Close, SLOW)

        def next(self) -> None:
            if len(self.data) - 1 >= n - 2:
                if self.position:
                    self.position.close()
            elif self.fast[-1] > self.slow[-1]:
                if not self.position.is_long:
                    self.buy()
            elif long_short:
                if not self.position.is_short:
                    self.sell()
            elif self.position:
                self.position.close()

    bt = backtesting.Backtest(
        df, SmaCross, cash=10_000, commission=commission, spread=0.0, margin=1.0, trade_on_close=False,
        hedging=False, exclusive_orders=True, finalize_trades=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # progress-bar and plotting chatter only
        return bt.run()


def _their_annualised(equity: np.ndarray, periods: int = 252) -> dict[str, float]:
    """backtesting.py 0.6.6 ``compute_stats`` formulas for daily bars without weekends."""
    r = equity[1:] / equity[:-1] - 1.0
    gmean = math.exp(np.log1p(r).sum() / r.shape[0]) - 1.0
    annual = (1.0 + gmean) ** periods - 1.0
    vol = math.sqrt((r.var(ddof=1) + (1.0 + gmean) ** 2) ** periods - (1.0 + gmean) ** (2 * periods))
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2))) * math.sqrt(periods)
    return {"Return (Ann.) [%]": annual * 100, "Volatility (Ann.) [%]": vol * 100,
            "Sharpe Ratio": annual / vol, "Sortino Ratio": annual / downside}


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


CASES = [
    pytest.param(False, 0.0, id="long-flat"),
    pytest.param(False, 0.001, id="long-flat-10bp"),
    pytest.param(True, 0.0, id="long-short"),
    pytest.param(True, 0.001, id="long-short-10bp"),
]


@pytest.mark.parametrize(("long_short", "commission"), CASES)
def test_run_backtest_sma_cross_matches_backtesting_py(sp500: Any, long_short: bool, commission: float) -> None:
    theirs = _run_backtesting_py(sp500, long_short=long_short, commission=commission)
    target = _sma_target(sp500.close, long_short=long_short)
    ours = run_backtest(sp500.open, sp500.high, sp500.low, sp500.close, target, fill="next_open",
                        costs=Costs(commission_bps=commission * 1e4), initial_cash=10_000.0, lot_size=1.0)

    their_equity = theirs["_equity_curve"]["Equity"].to_numpy()
    np.testing.assert_allclose(ours.equity, their_equity, rtol=RTOL)
    assert ours.equity[-1] == pytest.approx(theirs["Equity Final [$]"], rel=RTOL)
    assert ours.stats.total_return * 100 == pytest.approx(theirs["Return [%]"], rel=RTOL)
    assert ours.stats.max_drawdown * 100 == pytest.approx(-theirs["Max. Drawdown [%]"], rel=RTOL)

    # Same definition, both curves: our formulas on backtesting.py's equity curve.
    recomputed = compute_stats(their_equity, initial_cash=10_000.0)
    for name in ("sharpe", "sortino", "annual_return", "annual_volatility", "max_drawdown"):
        assert getattr(ours.stats, name) == pytest.approx(getattr(recomputed, name), rel=RTOL), name
    # Their (geometric) definitions, on our equity curve, against what they report.
    for key, value in _their_annualised(ours.equity).items():
        assert value == pytest.approx(theirs[key], rel=RTOL), key

    trades = theirs["_trades"]
    assert ours.stats.n_trades == theirs["# Trades"] == len(trades) > 20
    assert not any(t.is_open for t in ours.trades)
    assert ours.stats.win_rate * 100 == pytest.approx(theirs["Win Rate [%]"], rel=RTOL)
    np.testing.assert_array_equal([t.entry_bar for t in ours.trades], trades["EntryBar"].to_numpy())
    np.testing.assert_array_equal([t.exit_bar for t in ours.trades], trades["ExitBar"].to_numpy())
    np.testing.assert_array_equal([t.size for t in ours.trades], trades["Size"].to_numpy())
    np.testing.assert_allclose([t.entry_price for t in ours.trades], trades["EntryPrice"].to_numpy(), rtol=RTOL)
    np.testing.assert_allclose([t.exit_price for t in ours.trades], trades["ExitPrice"].to_numpy(), rtol=RTOL)
    np.testing.assert_allclose([t.pnl for t in ours.trades], trades["PnL"].to_numpy(), rtol=RTOL)
    np.testing.assert_allclose([t.return_pct for t in ours.trades], trades["ReturnPct"].to_numpy(), rtol=RTOL)
    if commission:
        np.testing.assert_allclose([t.commission for t in ours.trades], trades["Commission"].to_numpy(), rtol=RTOL)
        assert ours.equity[-1] < run_backtest(sp500.open, sp500.high, sp500.low, sp500.close, target,
                                              lot_size=1.0).equity[-1]
    if long_short:
        assert min(t.size for t in ours.trades) < 0 < max(t.size for t in ours.trades)


def _bars(n: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0.0, 0.003, n))
    high = np.maximum(open_, close) * 1.01
    low = np.minimum(open_, close) * 0.99
    return open_, high, low, close


def test_run_backtest_flat_target_keeps_equity_constant() -> None:
    o, h, lo, c = _bars()
    result = run_backtest(o, h, lo, c, np.zeros(c.shape[0]), costs=Costs(commission_bps=10, slippage_bps=5))
    np.testing.assert_array_equal(result.equity, np.full(c.shape[0], 10_000.0))
    assert result.trades == []
    assert result.stats.n_trades == 0 and result.stats.total_return == 0.0 and result.stats.max_drawdown == 0.0
    assert result.stats.sharpe == 0.0 and result.stats.sortino == 0.0  # zero volatility: 0 by convention, not NaN
    assert result.stats.exposure == 0.0 and result.stats.turnover == 0.0


def test_run_backtest_next_open_fills_hand_case() -> None:
    o = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    c = np.array([10.5, 11.5, 12.5, 13.5, 14.5])
    target = np.array([1.0, 1.0, 0.0, 0.0, 0.0])
    result = run_backtest(o, c + 1, o - 1, c, target, costs=Costs(commission_bps=100), initial_cash=1_000.0)
    units = 1_000.0 / (11.0 * 1.01)  # bought at open[1], commission 1%
    (trade,) = result.trades
    # target[2] = 0 is decided at the close of bar 2 and filled at open[3]
    assert (trade.entry_bar, trade.exit_bar, trade.entry_price, trade.exit_price) == (1, 3, 11.0, 13.0)
    assert trade.size == pytest.approx(units)
    assert trade.commission == pytest.approx(0.01 * units * (11.0 + 13.0))
    assert trade.pnl == pytest.approx(units * 2.0 - trade.commission)
    np.testing.assert_allclose(result.positions, [0.0, units, units, 0.0, 0.0])
    assert result.equity[1] == pytest.approx(units * 11.5)  # all cash spent on units + commission
    assert result.equity[-1] == pytest.approx(1_000.0 + trade.pnl)
    assert result.stats.exposure == pytest.approx(0.4)


def test_run_backtest_close_fill_trades_same_bar_with_slippage() -> None:
    o, h, lo, c = _bars(10)
    target = np.zeros(10)
    target[3:6] = -0.5
    result = run_backtest(o, h, lo, c, target, fill="close", costs=Costs(slippage_bps=20))
    (trade,) = result.trades
    assert (trade.entry_bar, trade.exit_bar) == (3, 6)
    assert trade.entry_price == pytest.approx(c[3] * 0.998) and trade.exit_price == pytest.approx(c[6] * 1.002)
    assert trade.size == pytest.approx(-0.5 * 10_000.0 / (c[3] * 0.998))
    assert result.weights[3] == pytest.approx(-0.5 * c[3] / (c[3] * 0.998) / (result.equity[3] / 10_000.0))


def test_run_backtest_position_open_at_end_is_marked_at_last_close() -> None:
    o, h, lo, c = _bars(20)
    result = run_backtest(o, h, lo, c, np.ones(20))
    (trade,) = result.trades
    assert trade.is_open and trade.exit_bar == 19 and trade.exit_price == c[-1]
    assert result.equity[-1] == pytest.approx(10_000.0 + trade.pnl)


def test_run_backtest_same_sign_resize_trades_difference_only() -> None:
    o, h, lo, c = _bars(12)
    target = np.zeros(12)
    target[2:5], target[5:8] = 1.0, 0.5
    result = run_backtest(o, h, lo, c, target)
    assert [t.size > 0 for t in result.trades] == [True, True]
    first, second = result.trades
    assert first.exit_bar == 6 and second.exit_bar == 9  # part closed at the resize, the rest at the exit
    assert first.size + second.size == pytest.approx(result.positions[5])


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1.5, -1.01])
def test_run_backtest_bad_target_raises_naming_target(bad: float) -> None:
    o, h, lo, c = _bars(10)
    target = np.zeros(10)
    target[4] = bad
    with pytest.raises(ValueError, match="target"):
        run_backtest(o, h, lo, c, target)


def test_run_backtest_ragged_lengths_raise() -> None:
    o, h, lo, c = _bars(10)
    with pytest.raises(ValueError, match="same length"):
        run_backtest(o, h, lo, c[:-1], np.zeros(10))
    with pytest.raises(ValueError, match="same length"):
        run_backtest(o, h, lo, c, np.zeros(9))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"fill": "open"}, "fill"), ({"initial_cash": 0.0}, "initial_cash"), ({"periods_per_year": 0}, "periods_per_year"),
     ({"lot_size": -1.0}, "lot_size")],
)
def test_run_backtest_bad_option_raises_naming_it(kwargs: dict[str, Any], name: str) -> None:
    o, h, lo, c = _bars(10)
    with pytest.raises(ValueError, match=name):
        run_backtest(o, h, lo, c, np.zeros(10), **kwargs)


def test_run_backtest_non_positive_price_raises_naming_column() -> None:
    o, h, lo, c = _bars(10)
    lo = lo.copy()
    lo[3] = 0.0
    with pytest.raises(ValueError, match="low"):
        run_backtest(o, h, lo, c, np.zeros(10))


def test_costs_negative_commission_raises() -> None:
    with pytest.raises(ValueError, match="commission_bps"):
        Costs(commission_bps=-1.0)


# --- Execution: when orders fill -----------------------------------------------------------


def test_execution_next_open_fills_at_the_next_open_then_holds_to_the_close() -> None:
    opens = np.array([[10.0, 20.0], [11.0, 19.0], [12.0, 18.0]])
    closes = np.array([[10.5, 19.5], [11.5, 18.5], [12.5, 17.5]])
    account = Account(2, costs=Costs(commission_bps=10.0), sizing="weights")
    execution = Execution(account, opens, closes, fill="next_open")
    execution.advance(0)
    assert execution.order(0, [0.5, -0.5]) == 0.0 and account.equity == 1.0  # queued, not filled
    gross = execution.advance(1)  # filled at open[1], held to close[1]
    after_fill = 1.0 - 0.001 * 1.0
    intraday = 0.5 * (11.5 / 11.0 - 1.0) - 0.5 * (18.5 / 19.0 - 1.0)
    assert account.equity == pytest.approx(after_fill * (1.0 + intraday))
    assert gross == pytest.approx(intraday)  # nothing held over the gap
    np.testing.assert_array_equal(execution.traded, [0.0, 1.0, 0.0])


def test_execution_close_fill_trades_at_the_decision_bar() -> None:
    closes = np.array([10.0, 11.0, 12.1])
    account = Account(1, sizing="weights")
    execution = Execution(account, closes, closes, fill="close")
    execution.advance(0)
    assert execution.order(0, [1.0]) == 1.0
    assert execution.advance(1) == pytest.approx(0.1) and account.equity == pytest.approx(1.1)
    assert execution.order(1, [0.0]) == pytest.approx(1.0)
    execution.advance(2)
    assert account.equity == pytest.approx(1.1)
    np.testing.assert_allclose(execution.traded, [1.0, 1.0, 0.0])


def test_execution_next_open_order_at_the_last_bar_is_never_filled() -> None:
    o, h, lo, c = _bars(5)
    result = run_backtest(o, h, lo, c, np.array([0.0, 0.0, 0.0, 0.0, 1.0]))
    assert result.trades == [] and np.all(result.equity == 10_000.0)


def test_execution_unknown_fill_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="fill"):
        Execution(Account(1), [1.0], [1.0], fill="open")  # type: ignore[arg-type]


def test_execution_stale_open_waits_for_the_close_of_the_next_bar() -> None:
    closes = np.array([10.0, 11.0, 12.1, 12.1])
    opens = np.array([10.0, 10.0, 11.5, 12.1])  # bar 1's open is a copy of close[0]: stale; bar 2's is real
    account = Account(1, sizing="weights")
    execution = Execution(account, opens, closes, fill="next_open", stale_opens="next_close")
    execution.advance(0)
    execution.order(0, [1.0])
    assert execution.advance(1) == 0.0 and account.equity == 1.0  # nothing held over bar 1: filled at its close
    assert execution.traded[1] == 1.0 and account.fills[0].price == 11.0 and execution.late_fills == 1
    execution.order(1, [0.0])
    assert execution.advance(2) == pytest.approx(11.5 / 11.0 - 1.0)  # held to bar 2's real open, sold there
    assert account.fills[1].price == 11.5 and execution.late_fills == 1


def test_execution_trusting_a_stale_open_fills_at_it() -> None:
    closes = np.array([10.0, 11.0])
    account = Account(1, sizing="weights")
    execution = Execution(account, np.array([10.0, 10.0]), closes, fill="next_open")
    execution.advance(0)
    execution.order(0, [1.0])
    assert execution.advance(1) == pytest.approx(0.1) and execution.late_fills == 0


def test_execution_unknown_stale_opens_rule_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="stale_opens"):
        Execution(Account(1), [1.0], [1.0], stale_opens="skip")  # type: ignore[arg-type]




@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), fill=st.sampled_from(["next_open", "close"]))
def test_filled_returns_match_the_engine_filling_the_same_targets(seed: int, fill: Fill) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    closes = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    opens = np.concatenate(([100.0], closes[:-1] * np.exp(rng.normal(0.0, 0.01, n - 1))))
    stale = np.concatenate(([False], rng.random(n - 1) < 0.25))
    opens[stale] = closes[np.flatnonzero(stale) - 1]  # some opens copy the previous close
    target = rng.choice([-1.0, -0.5, 0.0, 1.0], n)
    expected = filled_returns(target, opens, closes, fill)
    for t in range(2, n):  # bar t in an engine of three bars, weights exactly at target after each fill
        account = Account(1, sizing="weights")
        execution = Execution(account, opens[t - 2:t + 1], closes[t - 2:t + 1], fill=fill, stale_opens="next_close")
        execution.advance(0)
        execution.order(0, [target[t - 2]])
        execution.advance(1)
        account.weights = np.array([target[t - 2]])  # no drift: the weight is the target
        execution.order(1, [target[t - 1]])
        assert execution.advance(2) == pytest.approx(expected[t], abs=1e-12), t


def test_filled_returns_charge_each_change_of_target_in_the_bar_after_it() -> None:
    closes = np.array([100.0, 101.0, 102.0, 101.0, 103.0])
    opens = np.array([100.0, 100.5, 101.5, 101.5, 102.0])
    target = np.array([1.0, -1.0, -1.0, 0.0, 0.0])
    for fill in ("close", "next_open"):
        free = filled_returns(target, opens, closes, fill)  # type: ignore[arg-type]
        paid = filled_returns(target, opens, closes, fill, cost=0.001)  # type: ignore[arg-type]
        np.testing.assert_allclose(free - paid, [0.0, 0.001, 0.002, 0.0, 0.001])
