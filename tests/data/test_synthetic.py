"""Synthetic regime markets: determinism, valid bars, faithful regimes, a strong oracle."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.data.synthetic import (
    DEFAULT_TRANSITION,
    PARAM_SETS,
    REGIMES,
    RegimeParams,
    generate_ar_market,
    generate_regime_market,
    oracle_filter,
)
from quantcrew.data.validate import validate_ohlcv


def _stationary(transition: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eig(transition.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    return pi / pi.sum()


@pytest.fixture(scope="module")
def long_market():
    return generate_regime_market(60_000, seed=5)


def test_generate_same_seed_gives_identical_market() -> None:
    a = generate_regime_market(500, seed=3)
    b = generate_regime_market(500, seed=3)
    for col in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(a.bars.columns[col], b.bars.columns[col])
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.bars.timestamps, b.bars.timestamps)


def test_generate_different_seeds_give_different_markets() -> None:
    a = generate_regime_market(500, seed=3)
    b = generate_regime_market(500, seed=4)
    assert not np.allclose(a.bars.close, b.bars.close)


@pytest.mark.parametrize("name", sorted(PARAM_SETS))
def test_generate_bars_pass_validation(name: str) -> None:
    market = generate_regime_market(3000, params=name, seed=1)
    bars = validate_ohlcv(market.bars)
    assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    assert np.all(bars.low <= np.minimum(bars.open, bars.close))
    assert np.all(bars.low > 0)
    assert np.all(bars.volume > 0)
    assert len(market.labels) == len(bars) == len(market.states)


def test_generate_timestamps_are_business_days() -> None:
    market = generate_regime_market(300, start="2021-01-02", seed=0)  # a Saturday
    days = market.bars.timestamps.astype("datetime64[D]")
    assert str(days[0]) == "2021-01-04"
    assert np.all(np.is_busday(days))
    assert np.all(np.diff(days).astype(int) > 0)


def test_generate_label_frequencies_match_stationary_distribution(long_market) -> None:
    pi = _stationary(DEFAULT_TRANSITION)
    freq = np.array([np.mean(long_market.labels == name) for name in REGIMES])
    np.testing.assert_allclose(freq, pi, atol=0.05)
    np.testing.assert_array_equal(np.array(REGIMES)[long_market.states], long_market.labels)


def test_generate_returns_follow_each_regime_law(long_market) -> None:
    returns = long_market.bars.log_returns()
    labels = long_market.labels[1:]  # bar t's label generated the return from t-1 to t
    for name, law in long_market.params.items():
        r = returns[labels == name]
        assert r.std() == pytest.approx(law.sigma, rel=0.05)
        assert abs(r.mean() - law.mu) < 4 * law.sigma / np.sqrt(r.size)


def test_generate_range_and_volume_track_regime_volatility(long_market) -> None:
    bars = long_market.bars
    parkinson = np.log(bars.high / bars.low) / np.sqrt(4 * np.log(2))
    vol = {name: parkinson[long_market.labels == name].mean() for name in REGIMES}
    volume = {name: np.median(bars.volume[long_market.labels == name]) for name in REGIMES}
    for name in REGIMES:  # intraday share of the variance is 85 %; Parkinson mean is ~0.9x sigma
        assert 0.75 * long_market.params[name].sigma < vol[name] < 1.0 * long_market.params[name].sigma
    assert vol["sideways"] < vol["bull"] < vol["bear"] < vol["volatile"]
    assert volume["volatile"] > volume["bear"] > volume["bull"] > volume["sideways"]


def test_oracle_beats_chance_by_wide_margin() -> None:
    market = generate_regime_market(3000, seed=2)
    probs, labels = oracle_filter(market)
    assert probs.shape == (2999, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    accuracy = np.mean(labels == market.labels[1:])
    majority = max(np.mean(market.labels[1:] == name) for name in REGIMES)
    assert accuracy > 0.75
    assert accuracy > majority + 0.3


def test_oracle_uses_only_past_returns() -> None:
    market = generate_regime_market(800, seed=9)
    short = replace(market, bars=market.bars.head(500))
    full_probs, _ = oracle_filter(market)
    head_probs, _ = oracle_filter(short)
    np.testing.assert_allclose(full_probs[:499], head_probs)


def test_generate_accepts_param_set_name_and_custom_params() -> None:
    by_name = generate_regime_market(200, params="crisis", seed=0)
    by_value = generate_regime_market(200, params=PARAM_SETS["crisis"], seed=0)
    np.testing.assert_array_equal(by_name.bars.close, by_value.bars.close)
    custom = {name: RegimeParams(mu=0.0, sigma=0.01) for name in REGIMES}
    assert generate_regime_market(200, params=custom, seed=0).params == custom


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_bars": 1}, "n_bars"),
        ({"params": "nope"}, "unknown parameter set"),
        ({"params": {"bull": RegimeParams(0.0, 0.01)}}, "missing"),
        ({"transition": np.eye(3)}, "4x4"),
        ({"transition": np.full((4, 4), 0.3)}, "rows summing to 1"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_regime_market(**{"n_bars": 100, **kwargs})


def test_regime_params_reject_non_positive_sigma() -> None:
    with pytest.raises(ValueError, match="positive sigma"):
        RegimeParams(mu=0.0, sigma=0.0)


# -- the AR(1) market ----------------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(phi=st.floats(-0.8, 0.8), seed=st.integers(0, 10_000))
def test_ar_market_returns_have_the_asked_lag_one_autocorrelation(phi: float, seed: int) -> None:
    bars = generate_ar_market(4000, mu=0.0, phi=phi, sigma=0.01, seed=seed)
    r = np.diff(np.log(np.concatenate([[100.0], bars.close])))
    measured = float(np.corrcoef(r[:-1], r[1:])[0, 1])
    assert abs(measured - phi) < 0.08  # about 5 standard errors at n = 4000


def test_ar_market_bars_are_valid_business_days_and_reproducible() -> None:
    a = generate_ar_market(300, mu=0.0005, phi=-0.4, sigma=0.02, seed=3, start="2020-01-04")
    b = generate_ar_market(300, mu=0.0005, phi=-0.4, sigma=0.02, seed=3, start="2020-01-04")
    validate_ohlcv(a)
    assert np.array_equal(a.close, b.close)
    assert str(a.timestamps[0])[:10] == "2020-01-06"  # a Saturday rolls forward to Monday
    assert np.all(a.high >= np.maximum(a.open, a.close)) and np.all(a.low <= np.minimum(a.open, a.close))


@pytest.mark.parametrize(("field", "kwargs"), [("n_bars", {"n_bars": 1}), ("phi", {"phi": 1.0}),
                                               ("sigma", {"sigma": 0.0})])
def test_ar_market_refuses_bad_parameters_naming_them(field: str, kwargs: dict[str, float]) -> None:
    params: dict[str, float] = {"n_bars": 10, "mu": 0.0, "phi": 0.1, "sigma": 0.01, **kwargs}
    n = int(params.pop("n_bars"))
    with pytest.raises(ValueError, match=field):
        generate_ar_market(n, **params)
