"""The server's rule sizing is the agent side's fallback, bar by bar; next-bar returns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.data.ohlcv import OHLCV
from quantcrew.ml_server.services.execution.rule import next_bar_returns, rule_sizes
from quantcrew.tools.fallbacks import execution_fallback

_SIGNALS = {"down": -1.0, "flat": 0.0, "up": 1.0}


def _bars(close: np.ndarray) -> OHLCV:
    n = close.size
    return OHLCV(symbol="SYN", timestamps=np.datetime64("2020-01-01", "ns") + np.arange(n).astype("timedelta64[D]"),
                 open=close, high=close * 1.01, low=close * 0.99, close=close, volume=np.zeros(n))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), vol=st.floats(1e-4, 0.05), n=st.integers(62, 140),
       signal=st.sampled_from(sorted(_SIGNALS)), confidence=st.floats(0.0, 1.0))
def test_rule_sizes_match_the_execution_fallback_at_every_bar(seed: int, vol: float, n: int, signal: str,
                                                             confidence: float) -> None:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, vol, n)))
    rows = np.arange(60, n)
    got = rule_sizes(close, rows, np.full(rows.size, _SIGNALS[signal]), np.full(rows.size, confidence))
    for i, t in enumerate(rows[:: max(1, rows.size // 8)]):
        expected = execution_fallback(_bars(close[: t + 1]), signal, confidence)["size"]["mean"]
        assert got[t - 60] == pytest.approx(expected, rel=1e-9, abs=1e-12), (i, t)
    assert np.all((got >= 0.0) & (got <= 1.0))


def test_rule_sizes_refuse_bars_without_60_returns_before_them() -> None:
    close = np.linspace(100.0, 110.0, 80)
    with pytest.raises(ValueError, match="60"):
        rule_sizes(close, np.array([59]), np.array([1.0]), np.array([0.9]))


def test_next_bar_returns_are_what_a_position_taken_at_the_close_earns() -> None:
    close = np.array([100.0, 110.0, 99.0])
    np.testing.assert_allclose(next_bar_returns(close, np.array([0, 1])), [0.1, -0.1])
    with pytest.raises(ValueError, match="next bar"):
        next_bar_returns(close, np.array([2]))
