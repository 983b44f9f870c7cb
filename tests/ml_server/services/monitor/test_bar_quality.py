"""Bar quality on crafted bars: gaps, missing business days, stale prices, zero-range bars, outliers, bad bars,
and the score."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.ml_server.services.monitor.bar_quality import FIRST_FEW, BarQuality, bar_quality


def _days(n: int, start: str = "2024-01-01") -> np.ndarray:
    return np.busday_offset(np.datetime64(start, "D"), np.arange(n), roll="forward").astype("datetime64[us]")


def _score(times: np.ndarray, close: np.ndarray, *, spread: float = 0.01, max_gap_days: int = 7) -> BarQuality:
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + spread)
    low = np.minimum(open_, close) * (1 - spread)
    labels = [str(t)[:10] for t in times]
    return bar_quality(times, open_, high, low, close, labels, max_gap_days=max_gap_days)


def _walk(n: int, seed: int = 0) -> np.ndarray:
    return 100.0 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, n)))


def test_clean_business_day_bars_score_one() -> None:
    q = _score(_days(300), _walk(300))
    assert q.score == 1.0 and q.clean_bars == 300
    assert (q.gaps.count, q.stale.count, q.outliers.count, q.zero_range.count, q.inconsistent.count) == (0,) * 5
    assert q.missing_business_days.count == 0


def test_a_long_gap_is_counted_with_its_date_and_charged() -> None:
    times = np.r_[_days(100), _days(100, "2024-08-01")]
    q = _score(times, _walk(200))
    assert q.gaps.count == 1 and q.gaps.first == [str(times[100])[:10]]
    assert q.missing_business_days.count == int(np.busday_count(np.datetime64(str(times[99])[:10]) + 1,
                                                                np.datetime64(str(times[100])[:10])))
    assert q.charged_missing_days == q.missing_business_days.count
    assert q.score == pytest.approx(199 / (200 + q.charged_missing_days))


def test_a_lone_missing_business_day_is_reported_not_charged() -> None:
    times = np.delete(_days(50), 20)  # one holiday
    q = _score(times, _walk(49), max_gap_days=7)
    assert q.missing_business_days.count == 1 and q.charged_missing_days == 0 and q.gaps.count == 0
    assert q.score == 1.0


def test_a_run_of_identical_closes_is_stale_from_its_third_bar() -> None:
    close = _walk(100)
    close[40:46] = close[40]  # six equal closes: the 3rd to the 6th are stale
    q = _score(_days(100), close)
    assert q.stale.count == 4 and q.stale.first[0] == str(_days(100)[42])[:10]


def test_zero_range_bars_that_moved_are_flagged() -> None:
    times, close = _days(60), _walk(60)
    open_ = np.r_[close[0], close[:-1]]
    high, low = np.maximum(open_, close) * 1.01, np.minimum(open_, close) * 0.99
    high[10] = low[10] = open_[10] = close[10]  # one tick, but the close moved from the previous one
    q = bar_quality(times, open_, high, low, close, [str(t) for t in times], max_gap_days=7)
    assert q.zero_range.count == 1 and q.inconsistent.count == 0


def test_a_price_spike_is_an_outlier_and_ordinary_moves_are_not() -> None:
    close = _walk(500, seed=3)
    close[250:] *= 1.25  # a 22 % jump on 1 % daily noise: about 20 MADs
    q = _score(_days(500), close)
    assert q.outliers.count == 1 and q.outliers.first == [str(_days(500)[250])[:10]]
    assert _score(_days(500), _walk(500, seed=3)).outliers.count == 0


def test_bars_with_high_below_close_are_inconsistent() -> None:
    times, close = _days(30), _walk(30)
    open_ = np.r_[close[0], close[:-1]]
    high, low = np.maximum(open_, close) * 1.01, np.minimum(open_, close) * 0.99
    high[5] = close[5] * 0.9
    q = bar_quality(times, open_, high, low, close, [str(t) for t in times], max_gap_days=7)
    assert q.inconsistent.count == 1 and q.score == pytest.approx(29 / 30)


def test_only_the_first_few_timestamps_are_listed() -> None:
    close = _walk(200)
    close[10:100] = close[10]
    q = _score(_days(200), close)
    assert q.stale.count == 88 and len(q.stale.first) == FIRST_FEW


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 300), stale_from=st.integers(0, 299))
def test_the_score_is_a_share_in_unit_interval(seed: int, n: int, stale_from: int) -> None:
    close = _walk(n, seed)
    close[min(stale_from, n - 1):] = close[min(stale_from, n - 1)]
    q = _score(_days(n), close)
    assert 0.0 <= q.score <= 1.0 and q.clean_bars <= q.n_bars == n
