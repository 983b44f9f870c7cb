"""Properties of the one statistics module over any accepted return series (Hypothesis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quantcrew.quant.performance import (
    equity_curve,
    max_drawdown,
    performance_of_returns,
    period_returns,
    sharpe_ratio,
    sortino_ratio,
)

# simple returns of one period: a loss can reach -100% (everything lost), gains are bounded
_RETURNS = arrays(np.float64, st.integers(0, 300),
                  elements=st.floats(-0.99, 5.0, allow_nan=False, allow_infinity=False))
_PERIODS = st.sampled_from([1, 12, 52, 252, 365])


@settings(max_examples=200, deadline=None)
@given(returns=_RETURNS, periods=_PERIODS)
def test_every_statistic_is_finite_for_finite_returns(returns: np.ndarray, periods: int) -> None:
    perf = performance_of_returns(returns, periods_per_year=periods)
    for name, value in vars(perf).items():
        if isinstance(value, float):
            assert math.isfinite(value), (name, value)


@settings(max_examples=200, deadline=None)
@given(returns=_RETURNS)
def test_max_drawdown_is_a_fraction(returns: np.ndarray) -> None:
    equity = equity_curve(returns)
    dd = max_drawdown(equity, initial=1.0)
    assert 0.0 <= dd <= 1.0


@settings(max_examples=200, deadline=None)
@given(value=st.floats(-0.5, 0.5, allow_nan=False), n=st.integers(0, 50), periods=_PERIODS)
def test_constant_returns_have_zero_sharpe_and_finite_sortino(value: float, n: int, periods: int) -> None:
    returns = np.full(n, value)
    assert sharpe_ratio(returns, periods) == 0.0
    assert math.isfinite(sortino_ratio(returns, periods))


@settings(max_examples=200, deadline=None)
@given(returns=arrays(np.float64, st.integers(2, 200), elements=st.floats(-0.5, 0.5, allow_nan=False)),
       scale=st.floats(0.1, 10.0))
def test_sharpe_is_unchanged_by_scaling_returns(returns: np.ndarray, scale: float) -> None:
    base = sharpe_ratio(returns, 252)
    scaled = sharpe_ratio(returns * scale, 252)
    if base == 0.0 or scaled == 0.0:  # at the zero-volatility floor either way
        return
    assert math.isclose(base, scaled, rel_tol=1e-6, abs_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(returns=arrays(np.float64, st.integers(1, 200), elements=st.floats(-0.9, 1.0, allow_nan=False)))
def test_period_returns_invert_equity_curve(returns: np.ndarray) -> None:
    back = period_returns(equity_curve(returns, initial=100.0), initial=100.0)
    np.testing.assert_allclose(back, returns, rtol=1e-9, atol=1e-12)
