"""The paired block bootstrap of a Sharpe difference: properties over any return series (Hypothesis), and
what it says on series whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quantcrew.quant.bootstrap import block_bootstrap_sharpe_diff
from quantcrew.quant.performance import sharpe_ratio

_RETURN = st.floats(-0.5, 0.5, allow_nan=False, allow_infinity=False)


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Two return series of one length (2 to 150 bars)."""
    n = draw(st.integers(2, 150))
    a = draw(arrays(np.float64, n, elements=_RETURN))
    b = draw(arrays(np.float64, n, elements=_RETURN))
    return a, b


_OPTIONS = {"n_boot": 200}  # enough for the properties; the default 2000 for the verdicts


@settings(max_examples=150, deadline=None)
@given(pair=_pairs(), block=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_interval_is_finite_ordered_and_contains_the_point_difference(pair: tuple[np.ndarray, np.ndarray],
                                                                       block: int, seed: int) -> None:
    a, b = pair
    diff, lo, hi = block_bootstrap_sharpe_diff(a, b, block=block, seed=seed, **_OPTIONS)
    assert all(math.isfinite(x) for x in (diff, lo, hi))
    assert lo <= diff <= hi
    assert diff == pytest.approx(sharpe_ratio(a, 252) - sharpe_ratio(b, 252))


@settings(max_examples=60, deadline=None)
@given(pair=_pairs(), seed=st.integers(0, 2**32 - 1))
def test_same_seed_gives_the_same_interval(pair: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    a, b = pair
    assert (block_bootstrap_sharpe_diff(a, b, seed=seed, **_OPTIONS)
            == block_bootstrap_sharpe_diff(a.copy(), b.copy(), seed=seed, **_OPTIONS))


@settings(max_examples=60, deadline=None)
@given(a=arrays(np.float64, st.integers(2, 150), elements=_RETURN))
def test_a_series_against_itself_differs_by_exactly_zero(a: np.ndarray) -> None:
    # paired resampling takes the same bars from both: every bootstrap difference is 0
    assert block_bootstrap_sharpe_diff(a, a, **_OPTIONS) == (0.0, 0.0, 0.0)


@settings(max_examples=60, deadline=None)
@given(pair=_pairs())
def test_swapping_the_series_mirrors_the_interval(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    diff, lo, hi = block_bootstrap_sharpe_diff(a, b, seed=3, **_OPTIONS)
    back, back_lo, back_hi = block_bootstrap_sharpe_diff(b, a, seed=3, **_OPTIONS)
    assert back == pytest.approx(-diff) and back_lo == pytest.approx(-hi) and back_hi == pytest.approx(-lo)


def test_a_clearly_better_series_has_an_interval_above_zero() -> None:
    rng = np.random.default_rng(1)
    market = rng.normal(0.0, 0.01, 750)
    good = market + 0.002  # the same noise, 0.2% a day more
    diff, lo, hi = block_bootstrap_sharpe_diff(good, market)
    assert diff > 2.0 and 0.0 < lo <= diff <= hi


def test_the_90_percent_interval_covers_a_zero_difference_about_90_percent_of_the_time() -> None:
    # two unrelated noise series of one distribution: the true difference is 0
    rng = np.random.default_rng(2)
    covered = 0
    for _ in range(60):
        _, lo, hi = block_bootstrap_sharpe_diff(rng.normal(0, 0.01, 500), rng.normal(0, 0.01, 500), n_boot=1000)
        covered += lo < 0.0 < hi
    assert 0.75 <= covered / 60 <= 0.99


def test_a_wider_level_gives_a_wider_interval() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.0005, 0.01, 500), rng.normal(0.0, 0.01, 500)
    _, lo90, hi90 = block_bootstrap_sharpe_diff(a, b, level=0.90)
    _, lo99, hi99 = block_bootstrap_sharpe_diff(a, b, level=0.99)
    assert lo99 <= lo90 and hi90 <= hi99


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "needle"),
    [
        ([0.1, 0.2], [0.1], {}, "one length"),
        ([0.1], [0.1], {}, "at least 2"),
        ([0.1, float("nan")], [0.1, 0.2], {}, "finite"),
        ([0.1, 0.2], [0.1, 0.2], {"block": 0}, "positive"),
        ([0.1, 0.2], [0.1, 0.2], {"level": 1.0}, "level"),
    ],
)
def test_bad_input_is_a_value_error_naming_it(a: list[float], b: list[float], kwargs: dict[str, float],
                                              needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        block_bootstrap_sharpe_diff(a, b, **kwargs)  # type: ignore[arg-type]
