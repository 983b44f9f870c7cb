"""Backtest metrics hand-checked, benchmarks, returns by regime, and env P&L == backtest P&L."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from quantcrew.data import load_sample
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.services.rl.backtest import (
    BacktestMetrics,
    RegimeReturn,
    backtest,
    benchmarks,
    regime_returns,
)
from quantcrew.ml_server.services.rl.env import ACTION_POSITIONS, TradingEnv
from quantcrew.ml_server.services.rl.features import WARMUP, FeatureScaler, build_features
from quantcrew.ml_server.services.rl.rewards import make_reward


def _finite(metrics: BacktestMetrics) -> bool:
    return all(math.isfinite(v) for v in metrics.as_dict().values())


def test_backtest_hand_checked_on_toy_series() -> None:
    positions = np.array([1.0, 1.0, -1.0, 0.0, 0.5])
    forward = np.array([0.01, -0.02, 0.03, 0.05, 0.02])
    metrics, net = backtest(positions, forward, cost_bps=4.0, slippage_bps=1.0, periods_per_year=252)
    expected = np.array([0.01 - 0.0005, -0.02, -0.03 - 0.001, -0.0005, 0.01 - 0.00025])
    np.testing.assert_allclose(net, expected, rtol=0, atol=1e-15)
    assert metrics.total_return == pytest.approx(np.prod(1 + expected) - 1)
    assert metrics.annual_return == pytest.approx((1 + metrics.total_return) ** (252 / 5) - 1)
    assert metrics.turnover == pytest.approx((1 + 0 + 2 + 1 + 0.5) / 5)
    assert metrics.exposure == pytest.approx((1 + 1 + 1 + 0 + 0.5) / 5)
    assert metrics.hit_rate == pytest.approx(2 / 4)  # in the market on 4 bars, 2 of them up
    assert metrics.n_bars == 5
    assert metrics.sharpe == pytest.approx(expected.mean() / expected.std(ddof=1) * math.sqrt(252))
    downside = math.sqrt(np.mean(np.minimum(expected, 0) ** 2))
    assert metrics.sortino == pytest.approx(expected.mean() / downside * math.sqrt(252))
    assert metrics.annual_volatility == pytest.approx(expected.std(ddof=1) * math.sqrt(252))


def test_backtest_initial_position_changes_first_bar_cost() -> None:
    _, net = backtest([1.0, 1.0], [0.0, 0.0], cost_bps=10.0, slippage_bps=0.0, initial_position=1.0)
    assert net.tolist() == [0.0, 0.0]
    _, net = backtest([1.0, 1.0], [0.0, 0.0], cost_bps=10.0, slippage_bps=0.0, initial_position=-1.0)
    assert net.tolist() == pytest.approx([-0.002, 0.0])


def test_max_drawdown_of_a_known_equity_path() -> None:
    # equity 1.1, 0.88, 0.924, 0.8316, 1.08108: worst fall from the 1.1 peak to 0.8316
    metrics, _ = backtest(np.ones(5), [0.1, -0.2, 0.05, -0.1, 0.3], cost_bps=0.0, slippage_bps=0.0)
    assert metrics.max_drawdown == pytest.approx(1 - 0.8316 / 1.1)
    # a loss on the first bar is a drawdown from the starting equity
    metrics, _ = backtest(np.ones(2), [-0.1, 0.5], cost_bps=0.0, slippage_bps=0.0)
    assert metrics.max_drawdown == pytest.approx(0.1)


def test_constant_returns_give_zero_sharpe_not_nan() -> None:
    metrics, _ = backtest(np.ones(50), np.full(50, 0.001), cost_bps=0.0, slippage_bps=0.0)
    assert metrics.sharpe == 0.0 and metrics.sortino == 0.0 and metrics.max_drawdown == 0.0
    assert metrics.hit_rate == 1.0
    assert metrics.total_return == pytest.approx(1.001**50 - 1)
    assert _finite(metrics)


def test_wiped_out_book_and_single_bar_stay_finite() -> None:
    metrics, _ = backtest([2.0], [-0.6], cost_bps=0.0, slippage_bps=0.0)
    assert metrics.total_return == pytest.approx(-1.2) and metrics.annual_return == -1.0
    assert metrics.sharpe == 0.0 and _finite(metrics)


def test_buy_and_hold_is_price_ratio_less_one_entry_cost() -> None:
    bars = load_sample("SP500").tail(800)
    close = bars.close
    forward = close[1:] / close[:-1] - 1.0  # bars 0..n-2, each paid to the next close
    cost = (1.0 + 2.0) * 1e-4
    bench = benchmarks(forward, cost_bps=1.0, slippage_bps=2.0, periods_per_year=252)
    assert set(bench) == {"buy_and_hold", "flat"}
    hold = bench["buy_and_hold"]
    # (1 + f_0 - c) * prod_{t>=1}(1 + f_t) - 1 = close[-1]/close[0] - 1 - c * close[-1]/close[1]
    assert hold.total_return == pytest.approx(close[-1] / close[0] - 1 - cost * close[-1] / close[1], rel=1e-10)
    assert hold.total_return == pytest.approx(close[-1] / close[0] - 1 - cost, abs=2 * cost)
    assert hold.turnover == pytest.approx(1 / forward.shape[0]) and hold.exposure == 1.0
    flat = bench["flat"]
    assert flat.as_dict() == {
        "total_return": 0.0,
        "annual_return": 0.0,
        "annual_volatility": 0.0,
        "sharpe": 0.0,
        "sortino": 0.0,
        "max_drawdown": 0.0,
        "turnover": 0.0,
        "hit_rate": 0.0,
        "exposure": 0.0,
        "n_bars": forward.shape[0],
        "periods_per_year": 252,
    }


def test_regime_returns_compound_per_label() -> None:
    net = [0.1, -0.05, 0.02, 0.1, -0.5]
    labels = ["bull", "sideways", "sideways", "bull", "bear"]
    got = regime_returns(net, labels)
    assert list(got) == ["bear", "bull", "sideways"]
    assert got["bull"].total_return == pytest.approx(1.1 * 1.1 - 1) and got["bull"].n_bars == 2
    assert got["sideways"].total_return == pytest.approx(0.95 * 1.02 - 1)
    assert got["bear"] == RegimeReturn(total_return=-0.5, n_bars=1)
    assert got["bear"].as_dict() == {"total_return": -0.5, "n_bars": 1}
    with pytest.raises(ValueError, match="one length"):
        regime_returns(net, labels[:-1])


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"positions": [], "forward_returns": []}, "non-zero length"),
        ({"positions": [1.0, 0.0], "forward_returns": [0.1]}, "one non-zero length"),
        ({"positions": [np.nan], "forward_returns": [0.1]}, "finite"),
        ({"positions": [1.0], "forward_returns": [0.1], "cost_bps": -1.0}, "non-negative"),
        ({"positions": [1.0], "forward_returns": [0.1], "periods_per_year": 0}, "periods_per_year"),
    ],
)
def test_backtest_bad_inputs_raise_value_error(kwargs: dict[str, Any], needle: str) -> None:
    args: dict[str, Any] = {"cost_bps": 1.0, "slippage_bps": 1.0, **kwargs}
    with pytest.raises(ValueError, match=needle):
        backtest(args.pop("positions"), args.pop("forward_returns"), **args)


@pytest.mark.parametrize("action_mode", ["discrete", "continuous"])
def test_env_pnl_equals_backtest_pnl_for_the_same_positions(action_mode: Any) -> None:
    bars = generate_regime_market(700, seed=9).bars
    f = build_features(bars.close, bars.high, bars.low)
    x = FeatureScaler.fit(f.values, WARMUP, 500, names=f.names).transform(f.values)
    start, end = WARMUP, len(bars) - 1
    env = TradingEnv(
        x,
        f.forward_returns,
        make_reward("balanced"),
        start=start,
        end=end,
        action_mode=action_mode,
        cost_bps=2.5,
        slippage_bps=1.5,
    )
    env.reset(seed=0)
    env.action_space.seed(0)
    positions, env_net = [], []
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(env.action_space.sample())
        positions.append(info["position"])
        env_net.append(info["net_return"])
        done = terminated or truncated
    assert len(positions) == end - start
    if action_mode == "discrete":
        assert set(positions) <= set(ACTION_POSITIONS)
    metrics, net = backtest(positions, f.forward_returns[start:end], cost_bps=2.5, slippage_bps=1.5)
    assert np.array_equal(net, np.array(env_net))
    assert metrics.total_return == pytest.approx(np.prod(1 + np.array(env_net)) - 1, rel=1e-12)
    assert metrics.turnover > 0.3 and _finite(metrics)


def test_periods_per_year_default_is_the_nominal_daily_count_and_is_reported() -> None:
    rng = np.random.default_rng(0)
    forward = rng.normal(0.0005, 0.01, 504)
    daily, _ = backtest(np.ones(504), forward, cost_bps=0.0, slippage_bps=0.0)
    weekly, _ = backtest(np.ones(504), forward, cost_bps=0.0, slippage_bps=0.0, periods_per_year=52)
    assert daily.sharpe == pytest.approx(weekly.sharpe * math.sqrt(252 / 52))
    assert daily.annual_return == pytest.approx((1 + daily.total_return) ** 0.5 - 1)
    assert (daily.periods_per_year, weekly.periods_per_year) == (252, 52)


def test_metrics_are_those_of_the_shared_performance_module() -> None:
    from quantcrew.quant.performance import performance_of_returns

    rng = np.random.default_rng(4)
    metrics, net = backtest(rng.choice([-1.0, 0.0, 1.0], 300), rng.normal(0.0, 0.01, 300), cost_bps=3.0,
                            slippage_bps=1.0, periods_per_year=52)
    shared = performance_of_returns(net, periods_per_year=52).as_dict()
    shared["n_bars"] = shared.pop("n_periods")
    assert {k: v for k, v in metrics.as_dict().items() if k in shared} == shared
