"""Ensemble features: no look-ahead on all 16 columns, hand-checked values, edge cases, bad input."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from quantcrew.data import load_sample
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES, HALF_LIVES, WARMUP, build_features
from quantcrew.ml_server.services.ensemble.smc import (
    break_of_structure,
    fair_value_gaps,
    liquidity_sweeps,
    order_blocks,
    swing_levels,
)

FloatArray = npt.NDArray[np.float64]
VOLUME_COLUMNS = ("volume_z", "volume_ratio")


@pytest.fixture(scope="module")
def sp500() -> OHLCV:
    return load_sample("SP500")


@pytest.fixture(scope="module")
def synth() -> OHLCV:
    return generate_regime_market(600, seed=3).bars


def _build(bars: OHLCV, n: int | None = None) -> FloatArray:
    sl = slice(0, n)
    return build_features(bars.open[sl], bars.high[sl], bars.low[sl], bars.close[sl], bars.volume[sl])


def _col(x: FloatArray, name: str) -> FloatArray:
    return x[:, FEATURE_NAMES.index(name)]


def test_feature_names_are_16_unique_and_warmup_is_tight(synth: OHLCV) -> None:
    assert len(FEATURE_NAMES) == 16 and len(set(FEATURE_NAMES)) == 16
    assert 0 < WARMUP <= 70
    x = _build(synth)
    assert x.shape == (len(synth), 16) and x.dtype == np.float64
    assert np.isfinite(x[WARMUP:]).all()
    assert np.isnan(x[WARMUP - 1]).any()  # WARMUP is the FIRST complete row


@pytest.mark.parametrize("source", ["sp500", "synth"])
@pytest.mark.parametrize("t", [WARMUP - 1, WARMUP, WARMUP + 7, 137, 250, 401, 598])
def test_build_features_row_t_uses_only_bars_up_to_t(source: str, t: int, request: pytest.FixtureRequest) -> None:
    bars: OHLCV = request.getfixturevalue(source)
    bars = bars.head(600)
    full = _build(bars)
    prefix = _build(bars, t + 1)
    np.testing.assert_allclose(prefix[t], full[t], rtol=0.0, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(prefix, full[: t + 1], rtol=0.0, atol=1e-12, equal_nan=True)

    # Rewrite every bar after t (a crash, then wild swings and volume): rows <= t must not move.
    rng = np.random.default_rng(t)
    m = len(bars) - t - 1
    close = bars.close.copy()
    close[t + 1 :] *= 0.7 * np.exp(np.cumsum(rng.normal(0.0, 0.04, m)))
    open_ = bars.open.copy()
    open_[t + 1 :] = close[t + 1 :] * np.exp(rng.normal(0.0, 0.02, m))
    high, low, volume = bars.high.copy(), bars.low.copy(), bars.volume.copy()
    high[t + 1 :] = np.maximum(open_, close)[t + 1 :] * 1.03
    low[t + 1 :] = np.minimum(open_, close)[t + 1 :] * 0.97
    volume[t + 1 :] = rng.uniform(0.0, 5.0, m) * volume.max()
    changed = build_features(open_, high, low, close, volume)
    np.testing.assert_allclose(changed[: t + 1], full[: t + 1], rtol=0.0, atol=1e-12, equal_nan=True)
    after = slice(max(t + 1, WARMUP), None)
    assert not np.allclose(changed[after], full[after])  # the rewrite did reach the later rows
    if m < 100:
        return
    for name in ("order_block", "break_of_structure", "liquidity_sweep", "fair_value_gap", "swing_position"):
        assert not np.array_equal(_col(changed, name)[after], _col(full, name)[after]), name


def test_prefix_check_catches_a_centred_column(synth: OHLCV) -> None:
    """A column marked at the swing bar instead of its confirmation (smartmoneyconcepts' way) fails."""

    def centred(bars: OHLCV, n: int | None = None) -> FloatArray:
        x = _build(bars, n)
        k = FEATURE_NAMES.index("break_of_structure")
        x[:-5, k] = x[5:, k].copy()  # each event moved 5 bars earlier
        return x

    full = centred(synth)
    moved = [t for t in range(WARMUP, 300, 5) if not np.array_equal(centred(synth, t + 1)[t], full[t])]
    assert moved


def test_build_features_match_direct_formulas(synth: OHLCV) -> None:
    x = _build(synth)
    h, lo, c, v = synth.high, synth.low, synth.close, synth.volume
    r = np.diff(np.log(c))  # r[s - 1] is the return of bar s
    hi_level, lo_level = swing_levels(h, lo, 5)
    for t in (WARMUP, 211, 599):
        c20, c60 = c[t - 19 : t + 1], c[t - 59 : t + 1]
        tr = [max(h[s], c[s - 1]) - min(lo[s], c[s - 1]) for s in range(t - 19, t + 1)]
        lv = np.log1p(v[t - 19 : t + 1])
        top, bottom = hi_level[t], lo_level[t]
        expected = {
            "ret_1": np.log(c[t] / c[t - 1]),
            "ret_5": np.log(c[t] / c[t - 5]),
            "ret_20": np.log(c[t] / c[t - 20]),
            "vol_10": np.std(r[t - 10 : t]),
            "vol_ratio": np.std(r[t - 10 : t]) / np.std(r[t - 60 : t]),
            "trend_20_60": c20.mean() / c60.mean() - 1.0,
            "zscore_20": (c[t] - c20.mean()) / c20.std(),
            "range_ratio": tr[-1] / np.mean(tr),
            "close_location": (c[t] - lo[t]) / (h[t] - lo[t]),
            "volume_z": (lv[-1] - lv.mean()) / lv.std(),
            "volume_ratio": np.log((1.0 + v[t - 4 : t + 1].mean()) / (1.0 + v[t - 19 : t + 1].mean())),
            "swing_position": np.clip(2.0 * (c[t] - bottom) / (top - bottom) - 1.0, -3.0, 3.0),
        }
        for name, value in expected.items():
            assert _col(x, name)[t] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, t)


@pytest.mark.parametrize(
    ("name", "events"),
    [
        ("fair_value_gap", lambda b: fair_value_gaps(b.high, b.low)),
        ("liquidity_sweep", lambda b: liquidity_sweeps(b.high, b.low, b.close)),
        ("break_of_structure", lambda b: break_of_structure(b.high, b.low, b.close)),
    ],
)
def test_smc_columns_decay_from_the_last_confirmed_event(
    name: str, events: Callable[[OHLCV], npt.NDArray[np.int8]], synth: OHLCV
) -> None:
    x = _col(_build(synth), name)
    ev = events(synth)
    idx = np.flatnonzero(ev)
    assert idx.size >= 3
    assert (x[: idx[0]] == 0.0).all()
    assert np.array_equal(x[idx], ev[idx].astype(float))  # full strength at the confirmation bar
    half = HALF_LIVES[name]
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        ages = np.arange(b - a)
        np.testing.assert_allclose(x[a:b], ev[a] * 0.5 ** (ages / half), rtol=1e-12)


def test_order_block_column_is_the_zone_state(synth: OHLCV) -> None:
    x = _col(_build(synth), "order_block")
    expected = order_blocks(synth.open, synth.high, synth.low, synth.close).astype(float)
    assert np.array_equal(x, expected)
    assert (x == 1.0).any() and (x == -1.0).any()


def test_real_sp500_rows_after_warmup_are_finite_and_order_one(sp500: OHLCV) -> None:
    x = _build(sp500)
    assert np.isfinite(x[WARMUP:]).all()
    assert np.abs(x[WARMUP:]).max() < 10.0
    assert (x[WARMUP:].std(axis=0) > 0.0).all()  # every column carries something on real data


def test_volume_none_gives_zero_volume_columns(synth: OHLCV) -> None:
    with_volume = _build(synth)
    without = build_features(synth.open, synth.high, synth.low, synth.close, None)
    for name in VOLUME_COLUMNS:
        assert (_col(without, name) == 0.0).all()
        assert (_col(with_volume, name)[WARMUP:] != 0.0).any()
    others = [i for i, name in enumerate(FEATURE_NAMES) if name not in VOLUME_COLUMNS]
    assert np.array_equal(without[:, others], with_volume[:, others], equal_nan=True)


def test_constant_prices_give_finite_neutral_rows() -> None:
    n = 150
    flat = np.full(n, 42.0)
    for volume in (np.full(n, 1e6), np.zeros(n), None):
        x = build_features(flat, flat, flat, flat, volume)
        assert np.isfinite(x[WARMUP:]).all()
        row = dict(zip(FEATURE_NAMES, x[WARMUP + 10].tolist(), strict=True))
        assert row["vol_ratio"] == 1.0 and row["range_ratio"] == 1.0 and row["close_location"] == 0.5
        neutral = [k for k in FEATURE_NAMES if k not in ("vol_ratio", "range_ratio", "close_location")]
        assert all(row[k] == 0.0 for k in neutral), row


def test_short_series_give_nan_rows_not_errors() -> None:
    for n in (0, 1, 3, WARMUP):
        c = np.linspace(10.0, 11.0, n)
        x = build_features(c, c * 1.01, c * 0.99, c, np.ones(n))
        assert x.shape == (n, 16)
        if n:
            assert np.isnan(x[-1]).any()


def _good(n: int = 80) -> dict[str, FloatArray]:
    c = 100.0 * np.exp(np.cumsum(np.random.default_rng(5).normal(0.0, 0.01, n)))
    return {"open_": c.copy(), "high": c * 1.01, "low": c * 0.99, "close": c.copy(), "volume": np.full(n, 1e5)}


@pytest.mark.parametrize("column", ["high", "low", "close", "volume"])
def test_mismatched_lengths_raise_value_error_naming_the_column(column: str) -> None:
    cols = _good()
    cols[column] = cols[column][:-1]
    with pytest.raises(ValueError, match=f"column '{column}' has 79 values but 'open' has 80"):
        build_features(**cols)


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("close", 0.0, "column 'close' must be positive and finite; row 40"),
        ("open_", np.nan, "column 'open' must be positive and finite; row 40"),
        ("low", np.inf, "column 'low' must be positive"),
        ("high", 50.0, "column 'high' is below 'low' at row 40"),
        ("volume", -1.0, "column 'volume' must be finite and >= 0; row 40"),
    ],
)
def test_bad_values_raise_value_error_naming_the_column(column: str, value: float, needle: str) -> None:
    cols = _good()
    cols[column][40] = value
    with pytest.raises(ValueError, match=needle):
        build_features(**cols)


def test_two_dimensional_column_raises_value_error() -> None:
    cols = _good()
    cols["close"] = cols["close"].reshape(-1, 1)
    with pytest.raises(ValueError, match="column 'close' must be 1-D"):
        build_features(**cols)
