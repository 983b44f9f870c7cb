"""RL observation features: no look-ahead, hand-checked values, scaler, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from quantcrew.data import load_sample
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.services.rl.features import (
    CLIP,
    FEATURE_NAMES,
    WARMUP,
    FeatureScaler,
    ObservationFeatures,
    build_features,
)


@pytest.fixture(scope="module")
def sp500() -> OHLCV:
    return load_sample("SP500").tail(1500)


@pytest.fixture(scope="module")
def synth() -> OHLCV:
    return generate_regime_market(800, seed=11).bars


def _features(bars: OHLCV, n: int | None = None) -> ObservationFeatures:
    sl = slice(0, n)
    return build_features(bars.close[sl], bars.high[sl], bars.low[sl])


def _col(f: ObservationFeatures, name: str) -> np.ndarray:
    return f.values[:, f.names.index(name)]


@pytest.mark.parametrize("source", ["sp500", "synth"])
@pytest.mark.parametrize("t", [WARMUP + 1, WARMUP + 2, WARMUP + 19, 150, 333, 611, 798])
def test_build_features_row_t_uses_only_bars_up_to_t(source: str, t: int, request: pytest.FixtureRequest) -> None:
    bars: OHLCV = request.getfixturevalue(source)
    full = _features(bars)
    prefix = _features(bars, t + 1)
    assert np.array_equal(prefix.values[t], full.values[t])
    assert prefix.price_z[t] == full.price_z[t]

    # Rewrite every bar after t: row t must not move by a single bit.
    rng = np.random.default_rng(t)
    close = bars.close.copy()
    close[t + 1 :] *= np.exp(rng.normal(0.0, 0.05, close.shape[0] - t - 1))
    high = np.maximum(bars.high, close) * 1.01
    high[: t + 1] = bars.high[: t + 1]
    low = np.minimum(bars.low, close) * 0.99
    low[: t + 1] = bars.low[: t + 1]
    changed = build_features(close, high, low)
    assert np.array_equal(changed.values[t], full.values[t])
    assert not np.array_equal(changed.values[t + 1 :], full.values[t + 1 :])


def test_build_features_match_direct_formulas(synth: OHLCV) -> None:
    f = _features(synth)
    c, h, lo = synth.close, synth.high, synth.low
    r = np.diff(np.log(c))  # r[s - 1] is the return of bar s
    for t in (WARMUP, 200, 777):
        window20 = c[t - 19 : t + 1]
        changes = np.diff(c[t - 14 : t + 1])
        gains, losses = changes[changes > 0].sum(), -changes[changes < 0].sum()
        vol = {w: np.sqrt(np.mean(r[t - w : t] ** 2)) for w in (10, 20, 60)}
        expected = {
            "ret_1": np.log(c[t] / c[t - 1]),
            "ret_5": np.log(c[t] / c[t - 5]),
            "ret_20": np.log(c[t] / c[t - 20]),
            "vol_10": vol[10],
            "vol_20": vol[20],
            "vol_ratio": vol[10] / vol[60],
            "trend_20_60": np.log(window20.mean() / c[t - 59 : t + 1].mean()),
            "price_z_20": (c[t] - window20.mean()) / window20.std(),
            "range_14": np.mean(np.log(h[t - 13 : t + 1] / lo[t - 13 : t + 1])),
            "rsi_14": (gains - losses) / (gains + losses),
        }
        assert set(expected) == set(FEATURE_NAMES)
        for name, value in expected.items():
            assert _col(f, name)[t] == pytest.approx(value, rel=1e-5, abs=1e-7), (name, t)
        assert f.price_z[t] == pytest.approx(expected["price_z_20"], rel=1e-10)


def test_build_features_zero_warmup_rows_and_next_bar_forward_returns(synth: OHLCV) -> None:
    f = _features(synth)
    assert f.values.dtype == np.float32 and f.values.shape == (len(synth), len(FEATURE_NAMES))
    assert f.warmup == WARMUP
    assert not f.values[:WARMUP].any()
    assert np.all(np.abs(f.values[WARMUP:]).sum(axis=1) > 0)
    assert np.all(np.isfinite(f.values))
    np.testing.assert_allclose(f.forward_returns[:-1], synth.close[1:] / synth.close[:-1] - 1.0, rtol=1e-12)
    assert f.forward_returns[-1] == 0.0
    assert f.forward_returns.dtype == np.float64 and f.price_z.dtype == np.float64


def test_build_features_flat_prices_are_finite() -> None:
    n = 100
    flat = np.full(n, 50.0)
    f = build_features(flat, flat, flat)
    assert np.all(np.isfinite(f.values))
    row = dict(zip(f.names, f.values[80].tolist(), strict=True))
    assert row["price_z_20"] == 0.0 and row["rsi_14"] == 0.0 and row["vol_ratio"] == 1.0 and row["range_14"] == 0.0
    assert not f.forward_returns.any() and not f.price_z.any()


def test_build_features_appends_regime_probabilities(synth: OHLCV) -> None:
    n = len(synth)
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=n)
    f = build_features(
        synth.close, synth.high, synth.low, regime_probs=probs, regime_names=["bull", "bear", "sideways"]
    )
    assert f.names == (*FEATURE_NAMES, "p_bull", "p_bear", "p_sideways")
    np.testing.assert_allclose(f.values[WARMUP:, -3:], probs[WARMUP:], rtol=1e-6)
    assert not f.values[:WARMUP].any()


@pytest.mark.parametrize(
    ("probs_shape", "names", "needle"),
    [
        ((100, 2), ("bull", "bear", "sideways"), "shape"),
        ((99, 3), ("bull", "bear", "sideways"), "shape"),
        (None, ("bull",), "without regime_probs"),
        ((100, 2), ("bull", "bull"), "unique"),
    ],
)
def test_build_features_bad_regime_probs_raise_invalid_input(
    probs_shape: tuple[int, int] | None, names: tuple[str, ...], needle: str
) -> None:
    c = 100.0 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, 100)))
    probs = None if probs_shape is None else np.full(probs_shape, 0.5)
    with pytest.raises(InvalidInputError, match=needle) as info:
        build_features(c, c * 1.01, c * 0.99, regime_probs=probs, regime_names=names)
    assert info.value.details[0]["loc"] == ["regime_probs"]


def test_build_features_too_few_bars_raise_invalid_input() -> None:
    c = np.linspace(100.0, 110.0, WARMUP + 1)
    with pytest.raises(InvalidInputError, match=rf"data has {WARMUP + 1} bars.*at least {WARMUP + 2}") as info:
        build_features(c, c, c)
    assert info.value.details == [{"loc": ["data", "timestamps"], "msg": info.value.message}]
    build_features(np.append(c, 111.0), np.append(c, 111.0), np.append(c, 111.0))  # one more bar is enough


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("close", 0.0, "close must be positive"),
        ("close", np.nan, "close"),
        ("high", 10.0, "high"),
        ("low", -1.0, "low"),
    ],
)
def test_build_features_bad_prices_raise_invalid_input(column: str, value: float, needle: str) -> None:
    n = 80
    cols = {"close": np.full(n, 100.0), "high": np.full(n, 101.0), "low": np.full(n, 99.0)}
    cols[column][40] = value
    with pytest.raises(InvalidInputError, match=needle) as info:
        build_features(cols["close"], cols["high"], cols["low"])
    assert info.value.details[0]["loc"][:1] == ["data"]


def test_build_features_ragged_columns_raise_invalid_input() -> None:
    c = np.full(80, 100.0)
    with pytest.raises(InvalidInputError, match="one length"):
        build_features(c, c[:-1], c)


def test_scaler_standardises_training_rows_and_passes_regime_columns(synth: OHLCV) -> None:
    n = len(synth)
    probs = np.random.default_rng(2).dirichlet(np.ones(2), size=n)
    f = build_features(synth.close, synth.high, synth.low, regime_probs=probs, regime_names=["bull", "bear"])
    scaler = FeatureScaler.fit(f.values, WARMUP, 500, names=f.names)
    z = scaler.transform(f.values)
    assert z.dtype == np.float32 and z.shape == f.values.shape
    k = len(FEATURE_NAMES)
    train = z[WARMUP:500, :k].astype(np.float64)
    unclipped = np.abs(train).max(axis=0) < CLIP
    np.testing.assert_allclose(train.mean(axis=0)[unclipped], 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0)[unclipped], 1.0, atol=1e-4)
    assert np.array_equal(z[:, k:], f.values[:, k:])  # regime probabilities untouched
    assert scaler.mean[k:].tolist() == [0.0, 0.0] and scaler.scale[k:].tolist() == [1.0, 1.0]
    assert np.abs(z).max() <= CLIP


def test_scaler_centres_constant_column_and_clips() -> None:
    x = np.column_stack([np.full(50, 3.0), np.arange(50.0)])
    scaler = FeatureScaler.fit(x, 0, 50)
    assert scaler.scale[0] == 1.0 and scaler.mean[0] == 3.0
    z = scaler.transform(np.array([[3.0, 1e6], [4.5, -1e6]]))
    assert z.tolist() == [[0.0, CLIP], [1.5, -CLIP]]


def test_scaler_dict_round_trip_is_exact(synth: OHLCV) -> None:
    f = _features(synth)
    scaler = FeatureScaler.fit(f.values, WARMUP, 700, names=f.names)
    back = FeatureScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert back.names == scaler.names
    assert np.array_equal(back.mean, scaler.mean) and np.array_equal(back.scale, scaler.scale)
    assert np.array_equal(back.transform(f.values), scaler.transform(f.values))


@pytest.mark.parametrize(
    "data",
    [
        {"names": [], "mean": [0.0]},
        {"names": ["a"], "mean": [0.0, 1.0], "scale": [1.0, 1.0]},
        {"names": [], "mean": [0.0], "scale": [0.0]},
        {"names": [], "mean": [float("nan")], "scale": [1.0]},
    ],
)
def test_scaler_from_bad_dict_raises_value_error(data: dict[str, list[object]]) -> None:
    with pytest.raises(ValueError, match="scaler"):
        FeatureScaler.from_dict(data)


def test_scaler_rejects_bad_spans_and_widths() -> None:
    x = np.ones((10, 2))
    with pytest.raises(ValueError, match="start"):
        FeatureScaler.fit(x, 5, 5)
    with pytest.raises(ValueError, match="names"):
        FeatureScaler.fit(x, 0, 10, names=["a"])
    with pytest.raises(ValueError, match="2 feature columns"):
        FeatureScaler.fit(x, 0, 10).transform(np.ones((3, 3)))
