"""VaR / CVaR services: closed forms, empirical and simulated estimates, GARCH filtering, bad input."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from scipy import integrate, stats

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.risk import GarchModel
from quantcrew.ml_server.services.risk.garch import GarchParams, ewma_params, fit_garch, garch_filter
from quantcrew.ml_server.services.risk.var import (
    filtered_historical_var,
    fit_student_t,
    historical_horizon_rule,
    historical_var,
    monte_carlo_var,
    parametric_normal_var,
    parametric_t_var,
)

FloatArray = npt.NDArray[np.float64]
LEVELS = [0.95, 0.99]


def _simulate_garch_t(n: int, *, seed: int, omega: float = 2e-6, alpha: float = 0.08, beta: float = 0.9,
                      nu: float = 6.0, mu: float = 0.0003) -> tuple[FloatArray, FloatArray]:
    """Returns and their true conditional volatility (unit-variance t shocks)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, n + 500) / math.sqrt(nu / (nu - 2.0))
    s2 = omega / (1.0 - alpha - beta)
    r = np.empty(n + 500)
    sig = np.empty(n + 500)
    for t in range(n + 500):
        sig[t] = math.sqrt(s2)
        r[t] = mu + sig[t] * z[t]
        s2 = omega + alpha * (r[t] - mu) ** 2 + beta * s2
    return r[500:], sig[500:]


# ------------------------------------------------------------------ parametric


def test_parametric_normal_matches_hand_values() -> None:
    res = parametric_normal_var(0.0, 0.01, LEVELS)
    assert res[0].level == 0.95
    assert res[0].var == pytest.approx(0.0164485, abs=1e-7)
    assert res[0].cvar == pytest.approx(0.0206271, abs=1e-7)
    assert res[1].var == pytest.approx(0.0232635, abs=1e-7)
    assert res[1].cvar == pytest.approx(0.0266521, abs=1e-7)


def test_parametric_normal_horizon_scales_mean_linearly_and_vol_by_root() -> None:
    one = parametric_normal_var(0.001, 0.02, [0.99], horizon=1)[0]
    ten = parametric_normal_var(0.001, 0.02, [0.99], horizon=10)[0]
    z = stats.norm.ppf(0.99)
    assert one.var == pytest.approx(-0.001 + 0.02 * z)
    assert ten.var == pytest.approx(-0.01 + 0.02 * math.sqrt(10) * z)


def test_parametric_t_closed_form_matches_scipy() -> None:
    x = stats.t.rvs(4.0, loc=0.0005, scale=0.01, size=3000, random_state=np.random.default_rng(1))
    res, df = parametric_t_var(x, LEVELS)
    fdf, loc, scale = fit_student_t(x)
    assert df == fdf
    for r in res:
        q = stats.t.ppf(1.0 - r.level, df, loc=loc, scale=scale)  # return quantile: the loss is -q
        assert r.var == pytest.approx(-q, rel=1e-9)
        tail, _ = integrate.quad(lambda v: v * stats.t.pdf(v, df, loc=loc, scale=scale), -np.inf, q)
        assert r.cvar == pytest.approx(-tail / (1.0 - r.level), rel=1e-6)
        assert r.cvar > r.var


def test_fit_student_t_matches_scipy_mle() -> None:
    x = stats.t.rvs(5.0, loc=0.0, scale=0.01, size=2000, random_state=np.random.default_rng(2))
    df, loc, scale = fit_student_t(x)
    sdf, sloc, sscale = stats.t.fit(x)
    mine = stats.t.logpdf(x, df, loc=loc, scale=scale).sum()
    theirs = stats.t.logpdf(x, sdf, loc=sloc, scale=sscale).sum()
    assert mine >= theirs - 1e-3
    assert df == pytest.approx(sdf, rel=0.02)
    assert 3.5 < df < 7.0


def test_fit_student_t_clips_df_for_normal_data() -> None:
    x = np.random.default_rng(3).normal(0.0, 0.01, 500)
    df, _, scale = fit_student_t(x)
    assert 2.1 <= df <= 100.0
    assert scale == pytest.approx(0.01, rel=0.1)


# ------------------------------------------------------------------ historical


def test_historical_var_of_large_normal_sample_near_closed_form() -> None:
    x = np.random.default_rng(4).normal(0.0, 0.01, 400_000)
    got = historical_var(x, LEVELS)
    want = parametric_normal_var(0.0, 0.01, LEVELS)
    for g, w in zip(got, want, strict=True):
        assert g.var == pytest.approx(w.var, rel=0.01)
        assert g.cvar == pytest.approx(w.cvar, rel=0.015)


def test_historical_var_is_empirical_quantile_and_tail_mean() -> None:
    x = np.arange(-50, 50, dtype=np.float64) / 1000.0  # losses 0.05 .. -0.049
    res = historical_var(x, [0.9])[0]
    losses = -x
    # Weibull position p (n + 1) = 90.9: 0.9 of the way from the 90th (0.040) to the 91st (0.041) smallest loss
    assert res.var == pytest.approx(0.0409)
    assert res.cvar == pytest.approx(losses[losses >= res.var].mean())


def test_historical_horizon_rule_overlapping_vs_sqrt_time() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0.0, 0.01, 2000)
    assert historical_horizon_rule(2000, 1) == "single_period"
    assert historical_horizon_rule(2000, 10) == "overlapping"
    assert historical_horizon_rule(105, 10) == "sqrt_time"
    ten = historical_var(x, [0.99], horizon=10)[0]
    windows = np.array([np.prod(1.0 + x[i:i + 10]) - 1.0 for i in range(2000 - 9)])
    assert ten.var == pytest.approx(np.quantile(-windows, 0.99, method="weibull"), rel=1e-9)
    short = x[:105]
    scaled = historical_var(short, [0.95], horizon=10)[0]
    assert scaled.var == pytest.approx(historical_var(short, [0.95])[0].var * math.sqrt(10))


# ------------------------------------------------------------------ Monte Carlo


def _cov(k: int, seed: int = 0) -> FloatArray:
    a = np.random.default_rng(seed).normal(size=(k, k))
    out: FloatArray = a @ a.T / k * 1e-4 + np.eye(k) * 1e-5
    return out


def test_monte_carlo_reproducible_by_seed_and_independent_of_chunk_size() -> None:
    k = 10
    w, mu, cov = np.full(k, 0.1), np.zeros(k), _cov(k)
    a = monte_carlo_var(w, mu, cov, LEVELS, n_paths=50_000, seed=7)
    b = monte_carlo_var(w, mu, cov, LEVELS, n_paths=50_000, seed=7, chunk_size=1_000)
    c = monte_carlo_var(w, mu, cov, LEVELS, n_paths=50_000, seed=8)
    assert a == b
    assert a != c


def test_monte_carlo_agrees_with_parametric_normal() -> None:
    k = 20
    rng = np.random.default_rng(9)
    w = rng.normal(0.05, 0.05, k)
    w /= w.sum()
    mu, cov = rng.normal(0.0005, 0.0002, k), _cov(k, seed=1)
    sim = monte_carlo_var(w, mu, cov, LEVELS, horizon=5, n_paths=400_000, seed=0)
    exact = parametric_normal_var(float(w @ mu), math.sqrt(float(w @ cov @ w)), LEVELS, horizon=5)
    for s, e in zip(sim, exact, strict=True):
        assert s.var == pytest.approx(e.var, rel=0.01)
        assert s.cvar == pytest.approx(e.cvar, rel=0.01)


def test_monte_carlo_singular_covariance_uses_clipped_factor() -> None:
    v = np.array([0.01, 0.02, 0.015])
    cov = np.outer(v, v)  # rank one: Cholesky fails
    w = np.array([0.5, 0.3, 0.2])
    sim = monte_carlo_var(w, np.zeros(3), cov, [0.99], n_paths=200_000, seed=1)[0]
    exact = parametric_normal_var(0.0, float(w @ v), [0.99])[0]
    assert sim.var == pytest.approx(exact.var, rel=0.02)


# ------------------------------------------------------------------ GARCH and FHS


@pytest.mark.parametrize(("model", "o"), [("gjr", 1), ("symmetric", 0)])
def test_garch_filter_matches_arch_conditional_volatility(model: GarchModel, o: int) -> None:
    from arch import arch_model

    r, _ = _simulate_garch_t(1500, seed=11)
    params = fit_garch(r, model=model)
    assert params.converged and not params.fallback and params.nu is not None
    assert (params.gamma != 0.0) == (model == "gjr")
    res = arch_model(r * 100, mean="Constant", vol="GARCH", p=1, o=o, q=1, dist="t", rescale=False).fit(disp="off")
    sigma, z = garch_filter(r, params)
    np.testing.assert_allclose(sigma[:-1] * 100, res.conditional_volatility, rtol=1e-9)
    assert sigma[-1] * 100 == pytest.approx(math.sqrt(res.forecast(horizon=1).variance.iloc[-1, 0]), rel=1e-9)
    np.testing.assert_allclose(z, (r - params.mu) / sigma[:-1])
    assert 0.02 < params.alpha < 0.2 and 0.8 < params.beta < 0.97


def test_fhs_gives_larger_var_in_high_vol_state_than_calm_state() -> None:
    r, sig = _simulate_garch_t(3000, seed=12)
    window = slice(600, None)
    hot = 600 + int(np.argmax(sig[window]))
    calm = 600 + int(np.argmin(sig[window]))
    hot_res, hot_params = filtered_historical_var(r[:hot], [0.99])
    calm_res, _ = filtered_historical_var(r[:calm], [0.99])
    assert not hot_params.fallback
    assert hot_res[0].var > 1.5 * calm_res[0].var
    assert hot_res[0].cvar > hot_res[0].var


def test_fhs_horizon_one_is_exact_residual_quantile() -> None:
    r, _ = _simulate_garch_t(800, seed=13)
    res, params = filtered_historical_var(r, [0.99])
    sigma, z = garch_filter(r, params)
    losses = -(params.mu + sigma[-1] * z)
    assert res[0].var == pytest.approx(np.quantile(losses, 0.99, method="weibull"))


def test_fhs_multi_period_is_seeded_and_grows_with_horizon() -> None:
    r, _ = _simulate_garch_t(800, seed=14)
    params = fit_garch(r)
    one, _ = filtered_historical_var(r, [0.99], params=params)
    ten_a, _ = filtered_historical_var(r, [0.99], horizon=10, n_paths=5000, seed=3, params=params)
    ten_b, _ = filtered_historical_var(r, [0.99], horizon=10, n_paths=5000, seed=3, params=params)
    assert ten_a == ten_b
    assert ten_a[0].var > 2.0 * one[0].var


def test_fit_garch_refuses_too_few_rows() -> None:
    with pytest.raises(InvalidInputError, match="too few rows for a GARCH fit") as err:
        fit_garch(np.random.default_rng(0).normal(0, 0.01, 249))
    assert err.value.details[0]["loc"][:2] == ["data", "values"]


def test_fit_garch_nonstationary_fit_falls_back_to_ewma(monkeypatch: pytest.MonkeyPatch) -> None:
    import arch

    class _Model:
        def fit(self, **_: Any) -> SimpleNamespace:
            params = {"mu": 0.01, "omega": 0.01, "alpha[1]": 0.2, "beta[1]": 0.85, "nu": 5.0}
            return SimpleNamespace(params=params, convergence_flag=0)

    monkeypatch.setattr(arch, "arch_model", lambda *a, **k: _Model())
    r, _ = _simulate_garch_t(400, seed=15)
    params = fit_garch(r, model="symmetric")
    assert params.fallback and not params.converged and params.nu is None
    assert params.fallback_reason is not None and "not stationary" in params.fallback_reason
    assert (params.alpha, params.beta, params.omega) == pytest.approx((0.06, 0.94, 0.0))


def test_fit_garch_optimiser_error_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import arch

    class _Model:
        def fit(self, **_: Any) -> None:
            raise ValueError("boom")

    monkeypatch.setattr(arch, "arch_model", lambda *a, **k: _Model())
    params = fit_garch(_simulate_garch_t(300, seed=16)[0])
    assert params.fallback and params.fallback_reason is not None and "boom" in params.fallback_reason


def test_ewma_filter_is_riskmetrics_recursion() -> None:
    r = np.random.default_rng(17).normal(0.0, 0.01, 300)
    params = ewma_params(r, reason="test")
    sigma, _ = garch_filter(r, params)
    e = r - params.mu
    s2 = sigma[0] ** 2
    for t in range(300):
        s2 = 0.94 * s2 + 0.06 * e[t] ** 2
        assert sigma[t + 1] ** 2 == pytest.approx(s2, rel=1e-10)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.1])
def test_levels_outside_unit_interval_refused(level: float) -> None:
    with pytest.raises(InvalidInputError, match="strictly between 0 and 1"):
        historical_var(np.linspace(-0.01, 0.01, 50), [level])
    with pytest.raises(InvalidInputError, match="strictly between 0 and 1"):
        parametric_normal_var(0.0, 0.01, [level])


def test_horizon_below_one_refused() -> None:
    with pytest.raises(InvalidInputError, match="horizon"):
        historical_var(np.linspace(-0.01, 0.01, 50), [0.95], horizon=0)


def test_garch_params_details_are_json_scalars() -> None:
    p = GarchParams(mu=0.0, omega=1e-6, alpha=0.1, beta=0.8, nu=None, converged=True, dist="normal")
    d = p.details()
    assert "nu" not in d and d["persistence"] == pytest.approx(0.9)


def test_monte_carlo_on_cuda_matches_closed_form() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    k = 20
    w, mu, cov = np.full(k, 1.0 / k), np.zeros(k), _cov(k, seed=2)
    a = monte_carlo_var(w, mu, cov, LEVELS, n_paths=400_000, seed=4, chunk_size=100_000, device="cuda")
    b = monte_carlo_var(w, mu, cov, LEVELS, n_paths=400_000, seed=4, chunk_size=100_000, device="cuda")
    exact = parametric_normal_var(0.0, math.sqrt(float(w @ cov @ w)), LEVELS)
    assert a == b
    for s, e in zip(a, exact, strict=True):
        assert s.var == pytest.approx(e.var, rel=0.01)
