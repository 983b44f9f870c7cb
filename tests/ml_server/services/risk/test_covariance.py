"""Covariance estimators: shrinkage intensities, conditioning, the Ledoit-Wolf 2004 target, bad input."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.covariance import OAS, LedoitWolf

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.services.risk.covariance import (
    constant_correlation_shrinkage,
    estimate_covariance,
)

FloatArray = npt.NDArray[np.float64]


def _factor_returns(n_obs: int, n_assets: int, seed: int = 0) -> FloatArray:
    rng = np.random.default_rng(seed)
    beta = rng.normal(1.0, 0.3, n_assets)
    market = rng.normal(0.0, 0.01, n_obs)
    noise = rng.normal(0.0, 0.02, (n_obs, n_assets))
    out: FloatArray = market[:, None] * beta + noise
    return out


def _direct_constant_correlation(x: FloatArray) -> tuple[FloatArray, float]:
    """Ledoit & Wolf (2004), Appendix B, written term by term with loops."""
    t_obs, n = x.shape
    y = x - x.mean(axis=0)
    s = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            s[i, j] = sum(y[t, i] * y[t, j] for t in range(t_obs)) / t_obs
    r = np.array([[s[i, j] / np.sqrt(s[i, i] * s[j, j]) for j in range(n)] for i in range(n)])
    r_bar = sum(r[i, j] for i in range(n) for j in range(n) if i != j) * 2 / ((n - 1) * n) / 2
    f = np.array([[s[i, i] if i == j else r_bar * np.sqrt(s[i, i] * s[j, j]) for j in range(n)] for i in range(n)])
    pi = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            pi[i, j] = sum((y[t, i] * y[t, j] - s[i, j]) ** 2 for t in range(t_obs)) / t_obs
    pi_hat = pi.sum()

    def theta(k: int, i: int, j: int) -> float:  # theta_kk,ij
        return float(sum((y[t, k] ** 2 - s[k, k]) * (y[t, i] * y[t, j] - s[i, j]) for t in range(t_obs)) / t_obs)

    rho_hat = sum(pi[i, i] for i in range(n))
    for i in range(n):
        for j in range(n):
            if i != j:
                rho_hat += r_bar / 2 * (np.sqrt(s[j, j] / s[i, i]) * theta(i, i, j)
                                        + np.sqrt(s[i, i] / s[j, j]) * theta(j, i, j))
    gamma_hat = sum((f[i, j] - s[i, j]) ** 2 for i in range(n) for j in range(n))
    delta = max(0.0, min(1.0, (pi_hat - rho_hat) / gamma_hat / t_obs))
    return delta * f + (1 - delta) * s, delta


def test_constant_correlation_matches_direct_formula_on_tiny_case() -> None:
    x = _factor_returns(20, 4, seed=0)  # an intensity strictly inside (0, 1), so no clipping hides a bug
    cov, delta = constant_correlation_shrinkage(x)
    want_cov, want_delta = _direct_constant_correlation(x)
    assert 0.0 < delta < 1.0
    assert delta == pytest.approx(want_delta, rel=1e-10)
    np.testing.assert_allclose(cov, want_cov, rtol=1e-10)


def test_constant_correlation_target_keeps_variances() -> None:
    x = _factor_returns(60, 8)
    est = estimate_covariance(x, "constant_correlation")
    sample = np.cov(x, rowvar=False, ddof=0)
    np.testing.assert_allclose(np.diag(est.covariance), np.diag(sample), rtol=1e-12)
    assert est.shrinkage is not None and 0.0 <= est.shrinkage <= 1.0


def test_ledoit_wolf_shrinkage_in_unit_interval_and_better_conditioned() -> None:
    x = _factor_returns(120, 100)
    lw = estimate_covariance(x, "ledoit_wolf")
    sample = estimate_covariance(x, "sample")
    assert lw.shrinkage is not None and 0.0 < lw.shrinkage < 1.0
    assert sample.shrinkage is None
    assert lw.condition_number < sample.condition_number / 5
    ref = LedoitWolf().fit(x)
    np.testing.assert_allclose(lw.covariance, ref.covariance_, rtol=1e-12, atol=1e-18)
    assert lw.shrinkage == pytest.approx(ref.shrinkage_)


def test_oas_matches_sklearn() -> None:
    x = _factor_returns(80, 20)
    est = estimate_covariance(x, "oas")
    ref = OAS().fit(x)
    np.testing.assert_allclose(est.covariance, ref.covariance_, rtol=1e-12, atol=1e-18)
    assert est.shrinkage == pytest.approx(ref.shrinkage_)
    assert est.min_eigenvalue > 0.0


def test_sample_matches_numpy_unbiased_covariance() -> None:
    x = _factor_returns(200, 5)
    est = estimate_covariance(x, "sample")
    np.testing.assert_allclose(est.covariance, np.cov(x, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(est.mean, x.mean(axis=0))
    np.testing.assert_allclose(np.diag(est.correlation), 1.0)
    eig = np.linalg.eigvalsh(est.covariance)
    assert est.condition_number == pytest.approx(eig[-1] / eig[0])
    assert est.min_eigenvalue == pytest.approx(eig[0])


@pytest.mark.parametrize("method", ["ledoit_wolf", "oas", "constant_correlation"])
def test_shrunk_methods_accept_more_assets_than_rows(method: str) -> None:
    x = _factor_returns(40, 60)
    est = estimate_covariance(x, method)  # type: ignore[arg-type]
    assert est.min_eigenvalue > 0.0
    assert np.isfinite(est.condition_number)


def test_sample_refuses_more_assets_than_rows() -> None:
    with pytest.raises(InvalidInputError) as err:
        estimate_covariance(_factor_returns(40, 60), "sample")
    assert "ledoit_wolf" in err.value.message and "40 observations for 60 assets" in err.value.message
    assert err.value.details[0]["loc"][:2] == ["data", "values"]


def test_sample_refuses_near_singular_matrix() -> None:
    x = _factor_returns(100, 5)
    x = np.column_stack([x, x[:, 0] + x[:, 1]])  # exactly collinear
    with pytest.raises(InvalidInputError, match="near-singular.*ledoit_wolf or oas"):
        estimate_covariance(x, "sample")


def test_constant_column_is_named() -> None:
    x = _factor_returns(50, 3)
    x[:, 1] = 0.002
    with pytest.raises(InvalidInputError, match="constant column.*'BBB'") as err:
        estimate_covariance(x, "ledoit_wolf", columns=["AAA", "BBB", "CCC"])
    assert err.value.details[0]["columns"] == ["BBB"]


def test_fewer_than_two_rows_refused() -> None:
    with pytest.raises(InvalidInputError, match="at least 2"):
        estimate_covariance(np.array([[0.01, 0.02]]), "oas")
