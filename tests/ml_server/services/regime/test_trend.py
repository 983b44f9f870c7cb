"""The trend reading of a bar's regime: the calm days' drawdown from the year's high, their quarter, bear trends."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from quantcrew.ml_server.schemas.regime import REGIME_LABELS
from quantcrew.ml_server.services.regime.trend import (
    BEAR_DRAWDOWN,
    DRIFT_DAYS,
    HIGH_DAYS,
    apply_trend,
    trend_reading,
)


def _series(steps: list[int], moves: list[float]) -> tuple[np.ndarray, np.ndarray]:
    times = np.datetime64("2000-01-03", "D") + np.cumsum(np.asarray(steps, dtype=np.int64)).astype("timedelta64[D]")
    close = 100.0 * np.exp(np.cumsum(moves))
    return times.astype("datetime64[us]"), close


_paths = st.integers(min_value=2, max_value=160).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(min_value=1, max_value=9), min_size=n, max_size=n),  # calendar days between bars
        st.lists(st.floats(-0.08, 0.08, allow_nan=False), min_size=n, max_size=n),  # log returns
    )
)


@settings(max_examples=40, deadline=None)
@given(_paths, st.data())
def test_reading_matches_its_definition_bar_by_bar(path, data) -> None:
    times, close = _series(*path)
    n = len(close)
    weight = data.draw(hnp.arrays(np.float64, n - 1, elements=st.floats(0.0, 1.0)))
    reading = trend_reading(times, close, weight)
    assert reading.drawdown.shape == reading.trailing_return.shape == reading.bear.shape == (n - 1,)
    calm = np.concatenate([[0.0], np.cumsum(np.diff(np.log(close)) * weight)])  # the calm-day index, in logs
    day = np.timedelta64(1, "D")
    for t in range(1, n):
        inside = (times > times[t] - HIGH_DAYS * day)[: t + 1]
        drawdown = 1.0 - np.exp(calm[t] - calm[: t + 1][inside].max())
        assert reading.drawdown[t - 1] == pytest.approx(drawdown, abs=1e-9)
        assert reading.price_drawdown[t - 1] == pytest.approx(1.0 - close[t] / close[: t + 1][inside].max(), abs=1e-9)
        back = np.flatnonzero(times[: t + 1] <= times[t] - DRIFT_DAYS * day)
        if back.size:
            expected = calm[t] - calm[back[-1]]
            assert reading.trailing_return[t - 1] == pytest.approx(expected, abs=1e-9)
            if abs(drawdown - BEAR_DRAWDOWN) > 1e-9 and abs(expected) > 1e-12:  # clear of rounding at the edges
                assert reading.bear[t - 1] == (drawdown >= BEAR_DRAWDOWN and expected < 0)
        else:
            assert np.isnan(reading.trailing_return[t - 1]) and not reading.bear[t - 1]


def test_without_weights_the_calm_day_index_is_the_price() -> None:
    times, close = _series([1, 3, 1, 1, 2] * 60, [0.01, -0.03, 0.002, -0.02, 0.005] * 60)
    plain, ones = trend_reading(times, close), trend_reading(times, close, np.ones(len(close) - 1))
    np.testing.assert_allclose(plain.drawdown, plain.price_drawdown, atol=1e-12)
    np.testing.assert_allclose(plain.drawdown, ones.drawdown, atol=1e-12)
    np.testing.assert_array_equal(plain.bear, ones.bear)
    assert plain.bear.any()


@settings(max_examples=40, deadline=None)
@given(_paths, st.integers(min_value=2, max_value=160), st.data())
def test_reading_of_a_bar_does_not_change_when_bars_are_appended(path, cut, data) -> None:
    times, close = _series(*path)
    weight = data.draw(hnp.arrays(np.float64, len(close) - 1, elements=st.floats(0.0, 1.0)))
    cut = min(cut, len(close))
    full, part = trend_reading(times, close, weight), trend_reading(times[:cut], close[:cut], weight[: cut - 1])
    np.testing.assert_array_equal(full.drawdown[: cut - 1], part.drawdown)
    np.testing.assert_array_equal(full.trailing_return[: cut - 1], part.trailing_return)
    np.testing.assert_array_equal(full.bear[: cut - 1], part.bear)
    np.testing.assert_array_equal(full.price_drawdown[: cut - 1], part.price_drawdown)


_probs = st.integers(min_value=1, max_value=40).flatmap(
    lambda n: st.tuples(
        hnp.arrays(np.float64, (n, 4), elements=st.floats(0.01, 1.0)),
        hnp.arrays(np.bool_, n),
    )
)


@settings(max_examples=60, deadline=None)
@given(_probs)
def test_a_bear_trend_moves_the_calm_labels_probability_to_bear(case) -> None:
    weights, bear = case
    matrix = weights / weights.sum(axis=1, keepdims=True)
    probs = {label: matrix[:, i].copy() for i, label in enumerate(REGIME_LABELS)}
    out = apply_trend(probs, bear)
    total = sum(out.values())
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    np.testing.assert_array_equal(out["volatile"], probs["volatile"])  # a shock stays volatile
    assert np.all(out["bull"][bear] == 0.0) and np.all(out["sideways"][bear] == 0.0)
    np.testing.assert_allclose(out["bear"][bear], 1.0 - probs["volatile"][bear], atol=1e-12)
    for label in REGIME_LABELS:  # bars outside a bear trend are untouched, and the input is not changed
        np.testing.assert_array_equal(out[label][~bear], probs[label][~bear])
        np.testing.assert_array_equal(probs[label], matrix[:, REGIME_LABELS.index(label)])


def test_a_rally_and_a_flat_year_are_never_a_bear_trend() -> None:
    times, close = _series([1] * 600, [0.001] * 300 + [0.0] * 300)
    assert not trend_reading(times, close).bear.any()


def test_a_crash_on_days_that_are_not_calm_leaves_the_calm_days_out_of_a_bear_trend() -> None:
    # a crash (30 bars at -1.5 %) then a flat calm year: the price sits 36 % down, the calm days did not fall
    moves = [0.0005] * 200 + [-0.015] * 30 + [0.0] * 250
    times, close = _series([1] * len(moves), moves)
    calm = np.array([0.0 if 200 <= i < 230 else 1.0 for i in range(1, len(moves))])  # the filter called the crash
    assert trend_reading(times, close).bear[230:315].all()  # counting every day, the crash's quarter reads bear
    reading = trend_reading(times, close, calm)
    assert not reading.bear.any()
    assert reading.price_drawdown[240] > 0.3 and reading.drawdown[240] < 0.05


def test_a_slow_decline_becomes_a_bear_trend_once_20_percent_below_the_high() -> None:
    times, close = _series([1] * 500, [0.0005] * 250 + [-0.002] * 250)  # -0.2 % a day from bar 250
    reading = trend_reading(times, close)
    below = 1.0 - close[1:] / close[:251].max() >= BEAR_DRAWDOWN
    np.testing.assert_array_equal(reading.bear, below)
    assert below.sum() > 100
