"""Trials of a search and the DSR over all of them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.quant.sharpe import deflated_sharpe_ratio, sharpe_moments
from quantcrew.quant.trials import Trial, config_hash, trials_dsr


def _trials(sharpes: list[float]) -> list[Trial]:
    return [Trial(name=f"t{i}", config_hash=str(i), sharpe=s, periods_per_year=252, n_bars=1000, config={})
            for i, s in enumerate(sharpes)]


def test_config_hash_ignores_key_order_and_sees_every_value() -> None:
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1, "b": [1, 2]}) != config_hash({"a": 1, "b": [2, 1]})


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 60))
def test_trials_dsr_deflates_by_every_trial_and_their_spread(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0006, 0.01, 1500)
    sharpes = rng.normal(0.4, 0.3, n).tolist()
    dsr, variance = trials_dsr(returns, _trials(sharpes))
    assert variance == pytest.approx(np.var(np.array(sharpes) / math.sqrt(252), ddof=1))
    m = sharpe_moments(returns)
    assert dsr == pytest.approx(deflated_sharpe_ratio(m.sr, m.n, m.skew, m.kurtosis, n, variance))
    # the same spread over more trials deflates more
    more, _ = trials_dsr(returns, _trials(sharpes) * 3)
    assert dsr >= 0.0 and more <= deflated_sharpe_ratio(m.sr, m.n, m.skew, m.kurtosis, n, variance) + 1e-12


def test_trials_dsr_is_undefined_with_fewer_than_two_measured_sharpes() -> None:
    returns = np.random.default_rng(0).normal(0.0, 0.01, 100)
    assert math.isnan(trials_dsr(returns, _trials([0.4]))[0])
    assert math.isnan(trials_dsr(returns, _trials([0.4, 0.0]))[0])  # a flat book's 0 is not a measurement
