"""The strategy against a baseline: the Sharpe difference, its interval, the verdict; yearly returns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.backtest.comparison import compare, yearly_returns
from quantcrew.backtest.stats import compute_stats


def _equity(returns: np.ndarray) -> np.ndarray:
    return np.cumprod(1.0 + returns)


def _compare(a: np.ndarray, b: np.ndarray, seed: int = 0) -> object:
    ea, eb = _equity(a), _equity(b)
    return compare(ea, compute_stats(ea, initial_cash=1.0), eb, compute_stats(eb, initial_cash=1.0),
                   baseline="buy_and_hold", label="buy & hold", periods_per_year=252, seed=seed)


def test_a_clearly_better_strategy_beats_and_says_so() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 0.01, 2000)
    c = _compare(base + 0.002, base)  # the same noise plus 50% a year
    assert c.verdict == "beat" and c.beat and c.low > 0  # type: ignore[attr-defined]
    assert c.sentence.startswith("The crew beat buy & hold: Sharpe")  # type: ignore[attr-defined]


def test_a_clearly_worse_strategy_is_worse() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(0.0005, 0.01, 2000)
    c = _compare(base - 0.002, base)
    assert c.verdict == "worse" and not c.beat and c.high < 0  # type: ignore[attr-defined]
    assert "did worse than buy & hold, significantly" in c.sentence  # type: ignore[attr-defined]


def test_two_independent_noise_series_are_not_significantly_different() -> None:
    rng = np.random.default_rng(2)
    c = _compare(rng.normal(0.0003, 0.01, 500), rng.normal(0.0003, 0.01, 500))
    assert c.verdict.endswith("not significant") and "did not beat" in c.sentence  # type: ignore[attr-defined]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), edge=st.floats(-0.002, 0.002))
def test_the_interval_holds_the_difference_and_the_verdict_follows_it(seed: int, edge: float) -> None:
    rng = np.random.default_rng(seed)
    base = rng.normal(0.0002, 0.01, 300)
    c = _compare(base + edge + rng.normal(0.0, 0.004, 300), base, seed=seed)
    assert c.low <= c.difference <= c.high  # type: ignore[attr-defined]
    assert (c.verdict == "beat") == (c.low > 0) and (c.verdict == "worse") == (c.high < 0)  # type: ignore[attr-defined]


def test_yearly_returns_compound_to_the_total() -> None:
    dates = [f"{y}-{m:02d}-15" for y in (2007, 2008, 2009) for m in range(1, 13)][3:-2]
    rng = np.random.default_rng(3)
    equity = _equity(rng.normal(0.0, 0.03, len(dates)))
    rows = yearly_returns(dates, {"strategy": equity, "flat": np.ones(len(dates))})
    assert [r["year"] for r in rows] == [2007, 2008, 2009] and [r["bars"] for r in rows] == [9, 12, 10]
    assert np.prod([1.0 + r["strategy"] for r in rows]) == pytest.approx(equity[-1])
    assert rows[1]["strategy"] == pytest.approx(equity[20] / equity[8] - 1.0)
    assert all(r["flat"] == 0.0 for r in rows)
