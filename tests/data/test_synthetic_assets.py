"""Synthetic multi-asset markets and GARCH series: the simulated draws match the stated true law."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from quantcrew.data.synthetic_assets import (
    AssetMarket,
    GarchSeries,
    generate_correlated_market,
    generate_factor_market,
    generate_garch_series,
)
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.quant.student_t import student_t_ppf


def _relative_error(market: AssetMarket) -> float:
    sample = np.cov(market.returns, rowvar=False)
    return float(np.linalg.norm(sample - market.covariance) / np.linalg.norm(market.covariance))


# --- factor market -----------------------------------------------------------------------


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_factor_market_sample_covariance_approaches_the_true_one(dist: str) -> None:
    market = generate_factor_market(10, 50_000, n_factors=2, dist=dist, df=5.0, seed=3)  # type: ignore[arg-type]
    assert market.returns.shape == (50_000, 10)
    # Sampling error of a 50,000-draw covariance is ~1.5% (2% with t(5) tails); 4% leaves room.
    assert _relative_error(market) < 0.04
    betas, idio = market.meta["betas"], market.meta["idio_vol"]
    np.testing.assert_allclose(market.covariance, 0.01**2 * betas @ betas.T + np.diag(idio**2), rtol=1e-12)


def test_factor_market_t_draws_have_fat_tails_and_the_stated_variance() -> None:
    market = generate_factor_market(5, 100_000, dist="t", df=5.0, seed=1)
    x = market.returns - market.mean
    kurtosis = np.mean(x**4, axis=0) / np.mean(x**2, axis=0) ** 2
    assert np.all(kurtosis > 3.5)  # normal draws would give 3
    np.testing.assert_allclose(np.var(x, axis=0), np.diag(market.covariance), rtol=0.06)


def test_factor_market_benchmark_size_has_a_singular_sample_covariance() -> None:
    market = generate_factor_market(100, 120, seed=0)
    assert market.returns.shape == (120, 100) and market.covariance.shape == (100, 100)
    assert len(market.symbols) == 100 and market.symbols[0] == "A001" and market.symbols[-1] == "A100"
    assert np.linalg.eigvalsh(market.covariance)[0] > 0  # the truth is well conditioned
    assert np.linalg.matrix_rank(np.cov(market.returns, rowvar=False)) <= 119  # the sample is not
    again = generate_factor_market(100, 120, seed=0)
    np.testing.assert_array_equal(again.returns, market.returns)


def test_factor_market_mean_per_asset_is_applied() -> None:
    market = generate_factor_market(3, 200_000, mean=[0.001, 0.0, -0.002], factor_vol=0.005,
                                    idio_vol_range=(0.005, 0.005), seed=2)
    np.testing.assert_allclose(market.returns.mean(axis=0), [0.001, 0.0, -0.002], atol=1e-4)


def test_factor_market_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError, match="idio_vol_range"):
        generate_factor_market(5, 10, idio_vol_range=(0.03, 0.01))
    with pytest.raises(ValueError, match="df > 2"):
        generate_factor_market(5, 10, dist="t", df=2.0)
    with pytest.raises(ValueError, match="'normal' or 't'"):
        generate_factor_market(5, 10, dist="cauchy")  # type: ignore[arg-type]


# --- correlated market -------------------------------------------------------------------


COV = np.array([[4.0, 1.2, -0.8], [1.2, 2.0, 0.3], [-0.8, 0.3, 1.0]]) * 1e-4


@pytest.mark.parametrize("dist", ["normal", "t"])
def test_correlated_market_reproduces_the_given_covariance(dist: str) -> None:
    market = generate_correlated_market(COV, 100_000, mean=0.0005, dist=dist, df=5.0, seed=4,  # type: ignore[arg-type]
                                        symbols=["X", "Y", "Z"])
    assert market.symbols == ("X", "Y", "Z")
    np.testing.assert_array_equal(market.covariance, COV)
    assert _relative_error(market) < 0.04
    np.testing.assert_allclose(market.returns.mean(axis=0), 0.0005, atol=2e-4)


def test_correlated_market_refuses_a_matrix_that_is_not_psd() -> None:
    bad = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    with pytest.raises(ValueError, match="not positive semi-definite.*smallest eigenvalue is -1"):
        generate_correlated_market(bad, 10)


def test_correlated_market_refuses_an_asymmetric_matrix() -> None:
    with pytest.raises(ValueError, match="not symmetric"):
        generate_correlated_market(np.array([[1.0, 0.5], [0.2, 1.0]]), 10)
    with pytest.raises(ValueError, match="square"):
        generate_correlated_market(np.ones((2, 3)), 10)


def test_correlated_market_accepts_a_singular_psd_matrix() -> None:
    v = np.array([1.0, 2.0, -1.0]) * 0.01
    market = generate_correlated_market(np.outer(v, v), 1000, seed=0)  # rank 1: Cholesky fails
    assert market.meta["factorization"] == "eigen"
    # every draw lies on the line spanned by v
    np.testing.assert_allclose(market.returns[:, 1], 2.0 * market.returns[:, 0], atol=1e-12)


# --- to_panel / payload ------------------------------------------------------------------


def test_to_panel_prices_give_back_the_returns_on_business_days() -> None:
    market = generate_factor_market(4, 30, seed=5)
    panel = market.to_panel(start="2000-01-01", start_price=50.0)  # a Saturday: rolled to Monday
    assert len(panel) == 31 and panel.symbols == market.symbols
    assert panel.iso_timestamps()[0] == "2000-01-03"
    assert np.all(np.is_busday(panel.timestamps.astype("datetime64[D]")))
    np.testing.assert_array_equal(panel.close[0], 50.0)
    np.testing.assert_allclose(panel.log_returns(), market.returns, atol=1e-14)
    payload = market.to_matrix_payload(start="2000-01-01")
    from_panel = panel.to_matrix_payload()
    assert payload["columns"] == from_panel["columns"] and payload["timestamps"] == from_panel["timestamps"]
    np.testing.assert_allclose(payload["values"], from_panel["values"], atol=1e-14)
    assert payload["values"] == market.returns.tolist()
    assert MatrixPayload.model_validate(payload).shape == (30, 4)


# --- GARCH -------------------------------------------------------------------------------


def test_garch_unconditional_variance_matches_omega_over_persistence() -> None:
    series = generate_garch_series(100_000, seed=7)
    expected = 1e-6 / (1 - 0.08 - 0.9)
    assert series.params["unconditional_variance"] == pytest.approx(expected)
    # Across seeds the ratio has sd ~4.5% at this length (the t(6) GARCH has heavy tails).
    assert series.returns.var() / expected == pytest.approx(1.0, abs=0.15)


def test_garch_sigma_follows_the_recursion() -> None:
    series = generate_garch_series(500, omega=2e-6, alpha=0.1, beta=0.85, mu=0.0003, seed=1)
    p = series.params
    shocks = series.returns - p["mu"]
    expected = np.sqrt(p["omega"] + p["alpha"] * shocks[:-1] ** 2 + p["beta"] * series.sigma[:-1] ** 2)
    np.testing.assert_allclose(series.sigma[1:], expected, rtol=1e-12)
    z = shocks / series.sigma
    assert 0.8 < z.std() < 1.2  # unit-variance innovations


def test_garch_true_var_breach_rate_at_99_is_one_percent() -> None:
    n = 20_000
    series = generate_garch_series(n, seed=11)
    var = series.true_var(0.99)
    assert np.all(var > 0)
    breaches = int(np.sum(series.returns < -var))
    tolerance = 4.0 * math.sqrt(n * 0.01 * 0.99)  # 4 binomial sd: ~56 around 200
    assert abs(breaches - n * 0.01) < tolerance
    # The unstandardized t quantile (a classic slip) would breach far less often: ~0.4%.
    wrong = -series.sigma * student_t_ppf(0.01, 6.0)
    assert abs(int(np.sum(series.returns < wrong)) - n * 0.01) > tolerance


def test_garch_true_cvar_is_the_standardized_t_expected_shortfall() -> None:
    unit = GarchSeries(returns=np.zeros(1), sigma=np.ones(1),
                       params={"mu": 0.0, "df": 6.0, "omega": 1e-6, "alpha": 0.0, "beta": 0.0}, seed=0)
    # E[-Z | Z < q_0.025] for the unit-variance t(6), by numerical integration (scipy.stats.t.expect)
    assert unit.true_cvar(0.975)[0] == pytest.approx(2.6586362380, abs=1e-6)
    assert unit.true_var(0.99)[0] == pytest.approx(3.142668 * math.sqrt(4 / 6), abs=1e-6)
    normal = GarchSeries(returns=np.zeros(1), sigma=np.full(1, 2.0), params={"mu": 0.001, "df": math.inf}, seed=0)
    z = NormalDist().inv_cdf(0.99)
    assert normal.true_var(0.99)[0] == pytest.approx(2.0 * z - 0.001, rel=1e-12)
    assert normal.true_cvar(0.99)[0] == pytest.approx(2.0 * NormalDist().pdf(z) / 0.01 - 0.001, rel=1e-12)


def test_garch_with_infinite_df_has_normal_innovations() -> None:
    series = generate_garch_series(50_000, df=math.inf, seed=3)
    z = series.returns / series.sigma
    kurtosis = float(np.mean(z**4) / np.mean(z**2) ** 2)
    assert kurtosis == pytest.approx(3.0, abs=0.15)


def test_garch_refuses_non_stationary_or_bad_df() -> None:
    with pytest.raises(ValueError, match="stationary"):
        generate_garch_series(10, alpha=0.2, beta=0.8)
    with pytest.raises(ValueError, match="df must be over 2"):
        generate_garch_series(10, df=2.0)
    with pytest.raises(ValueError, match="level must be in"):
        generate_garch_series(10).true_var(99)
