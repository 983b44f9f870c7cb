"""Execution inputs: causal market conditions, hand-checked labels, the input scaler."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from quantcrew.ml_server.services.execution.inputs import (
    EXECUTION_INPUTS,
    MARKET_WARMUP,
    STRATEGIC_INPUTS,
    InputScaler,
    execution_targets,
    market_inputs,
)

D = len(EXECUTION_INPUTS)


def _bars(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = close * np.exp(rng.normal(0.0, 0.003, n))
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.01, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.01, n))
    volume = rng.lognormal(12.0, 0.5, n)
    return open_, high, low, close, volume


def test_market_inputs_have_six_columns_and_nan_warmup() -> None:
    o, h, lo, c, v = _bars(200, 1)
    out = market_inputs(o, h, lo, c, v)
    assert out.shape == (200, 6) == (200, D - STRATEGIC_INPUTS)
    assert np.isnan(out[:MARKET_WARMUP]).all()
    assert np.isfinite(out[MARKET_WARMUP:]).all()
    assert not np.allclose(out[MARKET_WARMUP:, 5], 0.0)
    assert np.array_equal(market_inputs(o, h, lo, c, None)[MARKET_WARMUP:, 5], np.zeros(200 - MARKET_WARMUP))


def test_market_inputs_match_direct_formulas() -> None:
    o, h, lo, c, v = _bars(150, 2)
    out = market_inputs(o, h, lo, c, v)
    r = np.diff(np.log(c))  # r[s - 1] is the return of bar s
    lv = np.log1p(v)
    for t in (MARKET_WARMUP, 97, 149):
        vol_10, vol_60 = np.std(r[t - 10 : t]), np.std(r[t - 60 : t])
        window = lv[t - 19 : t + 1]
        expected = [np.log(c[t] / c[t - 1]), np.log(c[t] / c[t - 5]), vol_10, vol_10 / vol_60,
                    (h[t] - lo[t]) / c[t], (lv[t] - window.mean()) / window.std()]
        np.testing.assert_allclose(out[t], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("t", [MARKET_WARMUP, MARKET_WARMUP + 1, 88, 140])
def test_market_inputs_row_t_unchanged_when_later_bars_change(t: int) -> None:
    o, h, lo, c, v = _bars(160, 5)
    full = market_inputs(o, h, lo, c, v)
    rng = np.random.default_rng(t)
    later = slice(t + 1, None)
    c2, o2, v2 = c.copy(), o.copy(), v.copy()
    c2[later] *= np.exp(rng.normal(0.0, 0.05, c.shape[0] - t - 1))
    o2[later] *= 1.03
    v2[later] *= 7.0
    h2, lo2 = np.maximum(h, np.maximum(o2, c2)) * 1.01, np.minimum(lo, np.minimum(o2, c2)) * 0.99
    h2[: t + 1], lo2[: t + 1] = h[: t + 1], lo[: t + 1]
    changed = market_inputs(o2, h2, lo2, c2, v2)
    truncated = market_inputs(o[: t + 1], h[: t + 1], lo[: t + 1], c[: t + 1], v[: t + 1])
    assert np.array_equal(changed[: t + 1], full[: t + 1], equal_nan=True)
    assert np.array_equal(truncated, full[: t + 1], equal_nan=True)
    assert not np.array_equal(changed[t + 1 :], full[t + 1 :])


def test_market_inputs_reject_ragged_or_non_positive_prices() -> None:
    o, h, lo, c, v = _bars(80, 6)
    with pytest.raises(ValueError, match="one length"):
        market_inputs(o, h, lo, c[:-1], v)
    bad = c.copy()
    bad[10] = 0.0
    with pytest.raises(ValueError, match="close"):
        market_inputs(o, h, lo, bad, v)
    with pytest.raises(ValueError, match="volume"):
        market_inputs(o, h, lo, c, -v)


# --- labels ------------------------------------------------------------------------------------


def _hand_path() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """80 bars: alternating +-1% returns up to bar 65, then a known path; opens at the previous close."""
    n = 80
    r = np.where(np.arange(n) % 2 == 0, 0.01, -0.01)
    r[0] = 0.0
    close = 100.0 * np.exp(np.cumsum(r))
    close[70] = close[65] * 1.03  # buy at 65, +3% over 5 bars
    open_ = np.concatenate([[close[0]], close[:-1]])
    open_[67] = close[66] * 0.99  # gap down 100 bps after the buy at 66: waiting pays
    open_[69] = close[68] * 1.0005  # gap up 5 bps after the sell at 68: under the 10 bps bar
    open_[72] = close[71] * 1.002  # gap up 20 bps after the sell at 71: waiting pays
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    return open_, high, low, close


def test_execution_targets_on_hand_built_path() -> None:
    o, h, lo, c = _hand_path()
    signal = np.zeros(c.shape[0])
    signal[[65, 66, 68, 71]] = [1.0, 1.0, -1.0, -1.0]
    size, timing, valid = execution_targets(o, h, lo, c, signal, horizon=5, wait_bps=10.0, risk_multiple=2.0)

    vol_65 = np.std(np.diff(np.log(c))[55:65])  # returns of bars 56..65
    assert vol_65 == pytest.approx(0.01, rel=1e-9)
    assert size[65] == pytest.approx(0.03 / (2.0 * vol_65 * math.sqrt(5.0)), rel=1e-12)
    assert 0.0 < size[65] < 1.0
    assert timing[65] == 0  # the next open is the close: no better fill
    assert timing[66] == 1  # a buy, gap down 100 bps
    assert timing[68] == 0  # a sell, gap up only 5 bps
    assert timing[71] == 1  # a sell, gap up 20 bps
    sell_move = -(c[73] / c[68] - 1.0) / (2.0 * np.std(np.diff(np.log(c))[58:68]) * math.sqrt(5.0))
    assert size[68] == pytest.approx(np.clip(sell_move, 0.0, 1.0), abs=1e-12)
    flat = (signal == 0) & valid
    assert flat.sum() > 5
    assert np.all(size[flat] == 0.0) and np.all(timing[flat] == 0)
    assert not valid[:MARKET_WARMUP].any()
    assert valid[MARKET_WARMUP : c.shape[0] - 5].all()
    assert not valid[-5:].any()
    assert np.all(size[~valid] == 0.0) and np.all(timing[~valid] == 0)


def test_execution_targets_size_clips_to_zero_and_one() -> None:
    o, h, lo, c = _hand_path()
    signal = np.zeros(c.shape[0])
    signal[65] = -1.0  # a sell before a 3% rise: size 0
    size, _, _ = execution_targets(o, h, lo, c, signal)
    assert size[65] == 0.0
    signal[65] = 1.0
    size, _, _ = execution_targets(o, h, lo, c, signal, risk_multiple=0.1)  # tiny risk unit: full size
    assert size[65] == 1.0


def test_execution_targets_reject_bad_signal_and_parameters() -> None:
    o, h, lo, c = _hand_path()
    with pytest.raises(ValueError, match="signal"):
        execution_targets(o, h, lo, c, np.full(c.shape[0], 2.0))
    with pytest.raises(ValueError, match="horizon"):
        execution_targets(o, h, lo, c, np.zeros(c.shape[0]), horizon=0)
    nan_signal = np.zeros(c.shape[0])
    nan_signal[70] = np.nan
    assert not execution_targets(o, h, lo, c, nan_signal)[2][70]


# --- config and scaler ------------------------------------------------------------------------


def test_input_scaler_passes_strategic_columns_and_standardises_market_ones() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(3.0, 2.0, size=(500, D))
    x[:, -1] = 4.0  # a constant column: centred, never divided by ~0
    scaler = InputScaler.fit(x)
    z = scaler.transform(x)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(scaler.mean[:STRATEGIC_INPUTS], 0.0)
    np.testing.assert_array_equal(scaler.std[:STRATEGIC_INPUTS], 1.0)
    np.testing.assert_allclose(z[:, :STRATEGIC_INPUTS], x[:, :STRATEGIC_INPUTS], rtol=1e-6)
    np.testing.assert_allclose(z[:, STRATEGIC_INPUTS:-1].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z[:, STRATEGIC_INPUTS:-1].std(axis=0), 1.0, rtol=1e-5)
    assert scaler.std[-1] == 1.0 and np.all(z[:, -1] == 0.0)
    again = InputScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert np.array_equal(again.mean, scaler.mean) and np.array_equal(again.std, scaler.std)


def test_input_scaler_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="finite"):
        InputScaler.fit(np.full((3, D), np.nan))
    scaler = InputScaler.fit(np.ones((3, D)))
    with pytest.raises(ValueError, match="shape"):
        scaler.transform(np.ones((3, D - 1)))
    with pytest.raises(ValueError, match="std"):
        InputScaler.from_dict({"mean": [0.0], "std": [0.0]})
    with pytest.raises(ValueError, match="mean"):
        InputScaler.from_dict({"std": [1.0]})


# --- network, storage -----------------------------------------------------------------------
