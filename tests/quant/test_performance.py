"""Performance statistics: hand-checked formulas, the zero-volatility convention, finite on any finite input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from quantcrew.quant.performance import (
    MIN_STD,
    annual_return,
    annual_volatility,
    equity_curve,
    max_drawdown,
    performance_of_equity,
    performance_of_returns,
    period_returns,
    sharpe_ratio,
    sortino_ratio,
    total_return,
    turnover,
)

SEEDS = range(40)


def _random_returns(seed: int) -> np.ndarray:
    """Finite returns of every kind: calm, wild, constant, flat, with wipe-outs, short or long."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 60))
    kind = seed % 5
    if kind == 0:
        return rng.normal(0.0005, 0.01, n)
    if kind == 1:
        return np.clip(rng.standard_t(2, n) * 0.3, -1.5, 5.0)
    if kind == 2:
        return np.full(n, float(rng.normal(0.0, 0.01)))
    if kind == 3:
        return np.zeros(n)
    return rng.choice([-1.0, -0.5, 0.0, 0.5, 3.0], n)


def test_statistics_hand_checked_on_a_toy_series() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.0, -0.01])
    perf = performance_of_returns(r, periods_per_year=252)
    growth = float(np.prod(1 + r))
    assert perf.total_return == pytest.approx(growth - 1)
    assert perf.annual_return == pytest.approx(growth ** (252 / 5) - 1)
    assert perf.annual_volatility == pytest.approx(r.std(ddof=1) * math.sqrt(252))
    assert perf.sharpe == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert perf.sortino == pytest.approx(r.mean() / math.sqrt((0.02**2 + 0.01**2) / 5) * math.sqrt(252))
    equity = np.cumprod(1 + r)
    assert perf.max_drawdown == pytest.approx(1 - equity[2 - 1] / 1.01)  # peak 1.01, trough after the -2%
    assert perf.max_drawdown == pytest.approx(max_drawdown(equity, 1.0))
    assert perf.n_periods == 5


def test_period_returns_and_equity_curve_invert_each_other() -> None:
    equity = np.array([101.0, 99.0, 105.0, 105.0])
    r = period_returns(equity, 100.0)
    np.testing.assert_allclose(r, [0.01, 99 / 101 - 1, 105 / 99 - 1, 0.0])
    np.testing.assert_allclose(equity_curve(r, 100.0), equity, rtol=1e-14)
    assert total_return(equity, 100.0) == pytest.approx(0.05)
    assert total_return([], 100.0) == 0.0


@pytest.mark.parametrize("value", [0.0, 0.001, -0.003])
def test_constant_returns_have_zero_sharpe_not_nan(value: float) -> None:
    r = np.full(250, value)
    assert sharpe_ratio(r, 252) == 0.0  # the std is float noise (or 0): below MIN_STD
    assert r.std(ddof=1) <= MIN_STD
    perf = performance_of_returns(r, periods_per_year=252)
    assert perf.sharpe == 0.0 and perf.annual_volatility == pytest.approx(0.0, abs=1e-12)
    if value >= 0:
        assert perf.sortino == 0.0  # no losing period: no downside deviation
    else:
        assert perf.sortino == pytest.approx(-math.sqrt(252))  # every period loses: mean / |mean|


def test_fewer_than_two_returns_give_zero_volatility_and_sharpe() -> None:
    one = performance_of_returns([-0.05], periods_per_year=252)
    assert one.annual_volatility == 0.0 and one.sharpe == 0.0
    assert one.sortino == pytest.approx(-math.sqrt(252))  # the downside deviation needs one return only
    assert one.total_return == pytest.approx(-0.05) and one.max_drawdown == pytest.approx(0.05)
    none = performance_of_returns([], periods_per_year=252)
    assert none.as_dict() == {"total_return": 0.0, "annual_return": 0.0, "annual_volatility": 0.0, "sharpe": 0.0,
                              "sortino": 0.0, "max_drawdown": 0.0, "n_periods": 0}
    assert performance_of_equity([], initial=10.0, periods_per_year=252) == none


def test_annual_return_wiped_out_capped_and_matches_the_power_formula() -> None:
    assert annual_return(-1.0, 10, 252) == -1.0 and annual_return(-1.5, 10, 252) == -1.0
    assert annual_return(1e6, 1, 252) == 1e300  # (1 + 1e6) ** 252 overflows a float: capped
    assert annual_return(0.5, 0, 252) == 0.0
    for total, n in ((0.1, 252), (-0.3, 500), (2.0, 30), (1e-9, 1000)):
        assert annual_return(total, n, 252) == pytest.approx((1 + total) ** (252 / n) - 1, rel=1e-12)


def test_max_drawdown_peak_starts_at_initial_when_given() -> None:
    equity = [0.9, 1.2, 0.6, 1.3]
    assert max_drawdown(equity) == pytest.approx(0.5)
    assert max_drawdown([0.9, 0.95], 1.0) == pytest.approx(0.1)
    assert max_drawdown([0.9, 0.95]) == 0.0
    assert max_drawdown([1.0, -0.2], 1.0) == pytest.approx(1.2)  # a book that lost more than everything
    assert max_drawdown([]) == 0.0


def test_turnover_per_period_and_annualised() -> None:
    traded = [1.0, -0.5, 0.25]
    assert turnover(traded, 5) == pytest.approx(1.75 / 5)
    assert turnover(traded, 5, 252) == pytest.approx(1.75 * 252 / 5)
    assert turnover([], 5, 252) == 0.0 and turnover(traded, 0) == 0.0


def test_sortino_ignores_gains_in_the_downside_deviation() -> None:
    calm = sortino_ratio([0.01, 0.01, -0.01, 0.01], 252)
    spiky = sortino_ratio([0.01, 0.5, -0.01, 0.01], 252)
    assert spiky > calm > 0.0


@pytest.mark.parametrize("seed", SEEDS)
def test_every_statistic_is_finite_and_json_safe_for_finite_returns(seed: int) -> None:
    r = _random_returns(seed)
    perf = performance_of_returns(r, periods_per_year=252)
    assert all(math.isfinite(v) for v in perf.as_dict().values()), perf
    json.dumps(perf.as_dict(), allow_nan=False)
    assert perf.max_drawdown >= 0.0 and perf.annual_return >= -1.0 and perf.annual_volatility >= 0.0
    assert annual_volatility(r, 252) == perf.annual_volatility


@pytest.mark.parametrize("seed", SEEDS)
def test_equity_and_returns_views_agree_and_do_not_depend_on_scale(seed: int) -> None:
    r = _random_returns(seed)
    r = r[:np.argmax(np.cumprod(1 + r) <= 0)] if np.any(np.cumprod(1 + r) <= 0) else r  # up to a wipe-out
    by_returns = performance_of_returns(r, periods_per_year=52)
    scaled = performance_of_returns(r, periods_per_year=52, initial=1000.0)
    by_equity = performance_of_equity(equity_curve(r, 1000.0), initial=1000.0, periods_per_year=52)
    for name, value in by_returns.as_dict().items():
        assert getattr(scaled, name) == pytest.approx(value, rel=1e-9, abs=1e-12), name
        assert getattr(by_equity, name) == pytest.approx(value, rel=1e-9, abs=1e-9), name


@pytest.mark.parametrize("seed", SEEDS)
def test_sharpe_scales_with_the_square_root_of_periods_per_year(seed: int) -> None:
    r = _random_returns(seed)
    daily, weekly = sharpe_ratio(r, 252), sharpe_ratio(r, 52)
    assert daily == pytest.approx(weekly * math.sqrt(252 / 52), rel=1e-12, abs=0.0)
    if r.size < 2 or np.ptp(r) == 0.0:
        assert daily == 0.0
