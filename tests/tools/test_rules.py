"""The strategy agents' position rules: hand-checkable trends, spikes and volatility, no look-ahead."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.data import load_sample
from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.fallbacks import strategy_fallback
from quantcrew.tools.rules import (
    mean_reversion_positions,
    momentum_positions,
    price_z_20,
    rule_indicators,
    rule_positions,
    vol_filtered_momentum_positions,
    vol_scaled_momentum_positions,
    volatility_20,
)


def _bars(close: np.ndarray, symbol: str = "X") -> OHLCV:
    stamps = np.datetime64("2010-01-01", "ns") + np.arange(len(close)) * np.timedelta64(1, "D")
    return OHLCV(symbol=symbol, timestamps=stamps, open=close, high=close, low=close, close=close,
                 volume=np.zeros_like(close))


def _walk(steps: np.ndarray, start: float = 100.0) -> np.ndarray:
    return start * np.exp(np.concatenate([[0.0], np.cumsum(steps)]))


def test_momentum_rules_go_long_in_an_uptrend_and_short_in_a_downtrend() -> None:
    rng = np.random.default_rng(3)
    up = _walk(0.002 + 0.004 * rng.standard_normal(299))
    down = _walk(-0.002 + 0.004 * rng.standard_normal(299))
    assert momentum_positions(up)[-1] == 1.0 and momentum_positions(down)[-1] == -1.0
    assert np.all(momentum_positions(up)[:59] == 0.0)  # the 60-bar mean needs 60 closes
    signals = {s["agent"]: s for s in strategy_fallback(_bars(up))["signals"]}
    assert signals["aggressive"]["action_label"] == "long" and signals["aggressive"]["target_position"] == 1.0
    assert signals["balanced"]["action_label"] == "long"
    # balanced: momentum times min(1, median 20-bar vol over the last year / current 20-bar vol), by hand
    rets = np.diff(np.log(up))
    vols = np.array([rets[i - 20:i].std(ddof=1) for i in range(20, rets.size + 1)])
    expected = min(1.0, float(np.median(vols[-252:])) / float(vols[-1]))
    assert signals["balanced"]["target_position"] == pytest.approx(expected)
    assert volatility_20(up)[-1] == pytest.approx(vols[-1])


def test_contrarian_shorts_a_spike_above_the_mean_and_buys_a_drop() -> None:
    base = np.where(np.arange(300) % 2 == 0, 100.0, 100.2)
    spike, drop = base.copy(), base.copy()
    spike[-1], drop[-1] = 101.0, 99.0
    window = spike[-20:]
    z = (spike[-1] - window.mean()) / window.std()  # population sd, as the server's price_z_20
    assert z > 1.5 and price_z_20(spike)[-1] == pytest.approx(z)
    assert mean_reversion_positions(spike)[-1] == -1.0
    assert mean_reversion_positions(drop)[-1] == 1.0
    assert mean_reversion_positions(base)[-1] == 0.0  # within 1.5 sd: flat
    signals = {s["agent"]: s for s in strategy_fallback(_bars(spike))["signals"]}
    assert signals["contrarian"]["action_label"] == "short"


def test_conservative_goes_flat_when_volatility_is_above_its_median() -> None:
    wiggle = np.where(np.arange(299) % 2 == 0, 1.0, -1.0)
    steps = 0.003 + 0.002 * wiggle
    steps[-20:] = 0.003 + 0.03 * wiggle[-20:]  # the last 20 bars swing ten times harder, still trending up
    close = _walk(steps)
    assert momentum_positions(close)[-1] == 1.0
    assert vol_filtered_momentum_positions(close)[-1] == 0.0
    assert 0.0 < vol_scaled_momentum_positions(close)[-1] < 0.2
    calm_steps = 0.003 + 0.002 * wiggle
    calm_steps[-20:] = 0.003 + 0.001 * wiggle[-20:]  # quieter than usual: the conservative agent follows
    assert vol_filtered_momentum_positions(_walk(calm_steps))[-1] == 1.0


def test_rule_positions_stay_in_bounds_and_unknown_volatility_keeps_conservative_flat() -> None:
    close = load_sample("SP500").close[-800:]
    positions = rule_positions(close)
    for series in positions.values():
        assert series.shape == close.shape and np.all(np.abs(series) <= 1.0)
    assert np.all(positions["conservative"][:40] == 0.0)
    assert set(np.unique(positions["contrarian"])) <= {-1.0, 0.0, 1.0}


@pytest.mark.parametrize("t", [61, 150, 299, 450])
def test_rule_signals_never_change_when_future_bars_are_appended(t: int) -> None:
    close = load_sample("SP500").close[-500:]
    rng = np.random.default_rng(t)
    future = close[t] * np.exp(np.cumsum(0.05 * rng.standard_normal(60)))  # wild future bars
    past_only = rule_positions(close[: t + 1])
    with_future = rule_positions(np.concatenate([close[: t + 1], future]))
    with_real_future = rule_positions(close)
    for agent, series in past_only.items():
        np.testing.assert_allclose(series, with_future[agent][: t + 1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(series, with_real_future[agent][: t + 1], rtol=0, atol=1e-12)
    last = {s["agent"]: s["target_position"] for s in strategy_fallback(_bars(close[: t + 1]))["signals"]}
    assert last == pytest.approx({agent: float(s[t]) for agent, s in with_future.items()})


def test_rule_indicators_are_none_until_their_window_is_full() -> None:
    close = load_sample("SP500").close[-30:]
    indicators = rule_indicators(close)
    assert indicators["sma_20"] == pytest.approx(close[-20:].mean())
    assert indicators["sma_60"] is None and indicators["median_volatility_20"] is None
    assert rule_indicators(np.array([])) == dict.fromkeys(indicators)
