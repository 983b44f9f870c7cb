"""The trivial baselines: their rules, their fills and costs, no look-ahead."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.backtest.account import Costs
from quantcrew.backtest.baselines import BASELINES, VOL_TARGET, calendar_bars, run_baselines


def _walk(n: int, seed: int, n_sym: int = 1, drift: float = 0.0003, vol: float = 0.012) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    closes = 100.0 * np.exp(np.cumsum(rng.normal(drift, vol, (n, n_sym)), axis=0))
    opens = np.vstack([closes[:1], closes[:-1] * np.exp(rng.normal(0.0, 0.003, (n - 1, n_sym)))])
    return opens, closes


def test_calendar_bars_scales_a_daily_window_to_the_calendar() -> None:
    assert calendar_bars(200, 252) == 200 and calendar_bars(200, 52) == 41 and calendar_bars(200, 12) == 10
    assert calendar_bars(20, 12) == 2  # never a one-bar window


def test_buy_and_hold_is_equal_weight_bought_at_the_next_open_once() -> None:
    opens = np.array([[100.0, 50.0], [100.0, 50.0], [104.0, 52.0], [110.0, 50.0], [120.0, 25.0]])
    closes = np.array([[100.0, 50.0], [100.0, 50.0], [105.0, 50.0], [110.0, 50.0], [120.0, 25.0]])
    runs = run_baselines(opens, closes, 1, cost=Costs(commission_bps=10.0), fill="next_open",
                         stale_opens="trust", periods_per_year=252)
    bh = runs["buy_and_hold"]
    # bought at open[2] (half each), paying 10 bp once; never rebalanced
    expected = 0.999 * np.array([1.0 / 0.999, 0.5 * 105 / 104 + 0.5 * 50 / 52, 0.5 * 110 / 104 + 0.5 * 50 / 52,
                                 0.5 * 120 / 104 + 0.5 * 25 / 52])
    np.testing.assert_allclose(bh.equity, expected, rtol=1e-12)
    assert [(f.bar, f.asset, f.after) for f in bh.fills] == [(1, 0, 0.5), (1, 1, 0.5)]
    assert bh.stats.n_trades == 2 and set(runs) == set(BASELINES)


def test_trend_is_long_above_its_average_and_flat_below_and_trades_only_on_flips() -> None:
    opens, closes = _walk(900, seed=1, drift=0.0)
    runs = run_baselines(opens, closes, 400, cost=Costs(), fill="close", stale_opens="trust", periods_per_year=252)
    trend = runs["trend"]
    sma = np.array([closes[t - 199:t + 1, 0].mean() for t in range(400, 900)])
    signal = closes[400:, 0] > sma
    np.testing.assert_array_equal(np.abs(trend.weights[:, 0]) > 0, signal)  # filled at the deciding close
    flips = int(np.sum(signal[1:] != signal[:-1])) + int(signal[0])
    assert len(trend.fills) == flips and flips > 2


def test_vol_target_caps_the_weight_at_one_and_aims_at_ten_percent() -> None:
    opens, closes = _walk(1200, seed=2, vol=0.02)  # about 32% a year: the target scales it down
    runs = run_baselines(opens, closes, 300, cost=Costs(commission_bps=5.0), fill="next_open",
                         stale_opens="trust", periods_per_year=252)
    vt = runs["vol_target"]
    assert np.all(vt.weights <= 1.0 + 1e-12) and 0.2 < float(np.mean(vt.weights[1:])) < 0.5
    assert vt.stats.annual_volatility == pytest.approx(VOL_TARGET, rel=0.3)
    # the band: not a fill every bar
    assert len(vt.fills) < 0.5 * len(vt.equity)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(350, 550))
def test_baselines_never_look_ahead(seed: int, cut: int) -> None:
    opens, closes = _walk(600, seed=seed, n_sym=2)
    moved_o, moved_c = opens.copy(), closes.copy()
    moved_c[cut + 1:] *= 0.7
    moved_o[cut + 1:] *= 0.7
    a = run_baselines(opens, closes, 300, cost=Costs(commission_bps=5), fill="next_open", stale_opens="trust",
                      periods_per_year=252)
    b = run_baselines(moved_o, moved_c, 300, cost=Costs(commission_bps=5), fill="next_open", stale_opens="trust",
                      periods_per_year=252)
    n = cut - 300 + 1
    for name in BASELINES:
        np.testing.assert_array_equal(a[name].equity[:n], b[name].equity[:n])
        np.testing.assert_array_equal(a[name].weights[:n], b[name].weights[:n])
