"""The numpy answers tools give when the ML server cannot: hand-checkable cases."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.data import generate_factor_market, load_sample
from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.fallbacks import (
    anomaly_fallback,
    cluster_fallback,
    factor_fallback,
    risk_fallback,
    strategy_fallback,
)


def test_risk_fallback_historical_var_of_a_known_sample() -> None:
    losses = np.arange(1, 101, dtype=np.float64) / 1000.0  # losses 0.001 .. 0.100
    returns = -losses[:, None]
    result = risk_fallback(returns, [1.0], [0.95, 0.99], 1)
    est = {e["level"]: e for e in result["estimates"]}
    assert est[0.95]["var"] == pytest.approx(np.quantile(losses, 0.95))
    assert est[0.95]["cvar"] == pytest.approx(losses[losses >= est[0.95]["var"]].mean())
    assert est[0.99]["var"] > est[0.95]["var"]
    assert result["method_used"] == "fallback_historical"


def test_risk_fallback_scales_by_square_root_of_time_and_says_so() -> None:
    rng = np.random.default_rng(0)
    returns = rng.normal(0, 0.01, size=(1000, 2))
    one = risk_fallback(returns, [0.5, 0.5], [0.99], 1)["estimates"][0]["var"]
    ten = risk_fallback(returns, [0.5, 0.5], [0.99], 10)
    assert ten["estimates"][0]["var"] == pytest.approx(one * np.sqrt(10))
    assert "sqrt-of-time" in ten["rule"]


def test_factor_fallback_finds_the_one_factor() -> None:
    market = generate_factor_market(6, 2000, idio_vol_range=(0.001, 0.002), seed=1)
    result = factor_fallback(market.returns, list(market.symbols), None)
    assert result["n_components"] == 1
    assert result["explained_variance_ratio"][0] > 0.9
    assert all(v[0] > 0 for v in result["exposures"].values())


def test_cluster_fallback_groups_two_blocks() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(500, 1)), rng.normal(size=(500, 1))
    returns = np.hstack([a + 0.3 * rng.normal(size=(500, 3)), b + 0.3 * rng.normal(size=(500, 3))])
    result = cluster_fallback(returns, ["a1", "a2", "a3", "b1", "b2", "b3"])
    assert result["n_clusters"] == 2
    assert sorted(map(sorted, result["members"].values())) == [["a1", "a2", "a3"], ["b1", "b2", "b3"]]


def test_anomaly_fallback_flags_an_injected_shock_by_date() -> None:
    bars = load_sample("SP500").tail(300)
    close = bars.close.copy()
    close[250:] *= 0.85  # a 15% crash on bar 250
    shocked = OHLCV(symbol="X", timestamps=bars.timestamps, open=close, high=close, low=close, close=close,
                    volume=np.zeros_like(close))
    result = anomaly_fallback(shocked, top_k=3)
    assert result["top"][0]["timestamp"] == shocked.iso_timestamps()[250]
    assert result["top"][0]["z"] > 10
    assert result["n_flagged"] >= 1


# -- strategy signals -------------------------------------------------------------------------------


def test_strategy_fallback_reports_rules_indicators_and_regime() -> None:
    bars = load_sample("SP500").tail(300)
    result = strategy_fallback(bars, ["contrarian", "aggressive"])
    assert result["method_used"] == "fallback_rules" and result["as_of"] == "2018-12-31"
    assert [s["agent"] for s in result["signals"]] == ["contrarian", "aggressive"]
    assert all(s["source"] == "rules" and s["rule"] for s in result["signals"])
    assert result["regime"] in {"bull", "bear", "sideways", "volatile"}
    assert result["indicators"]["sma_60"] == pytest.approx(bars.close[-60:].mean())
