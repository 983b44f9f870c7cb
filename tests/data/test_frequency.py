"""guess_frequency: a name for the typical spacing of timestamps."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.data.frequency import guess_frequency, periods_per_year


@pytest.mark.parametrize(
    ("step", "name"),
    [("1h", "intraday"), ("1D", "daily"), ("7D", "weekly"), ("30D", "monthly"), ("91D", "quarterly"),
     ("60D", "irregular")],
)
def test_guess_frequency_names_the_median_step(step: str, name: str) -> None:
    ts = np.datetime64("2020-01-01T00", "h") + np.arange(20) * np.array(int(step[:-1]), dtype=f"m8[{step[-1]}]")
    assert guess_frequency(ts) == name


def test_guess_frequency_needs_two_timestamps() -> None:
    assert guess_frequency(np.array([], dtype="datetime64[ns]")) == "unknown"
    assert guess_frequency(np.array(["2020-01-01"], dtype="datetime64[D]")) == "unknown"


# --- periods_per_year: bars per year from the data's own calendar ------------------------------

def _business_days(start: str, end: str) -> np.ndarray:
    days = np.arange(np.datetime64(start), np.datetime64(end))
    return days[np.is_busday(days)]


@pytest.mark.parametrize(
    ("timestamps", "expected"),
    [
        (_business_days("2010-01-01", "2014-01-01"), 261),                        # every business day
        (np.arange(np.datetime64("2015-01-01"), np.datetime64("2019-01-01")), 365),  # crypto: every day
        (np.arange(np.datetime64("2010-01-04"), np.datetime64("2016-01-04"), 7), 52),  # weekly
        (np.arange(np.datetime64("2010-01", "M"), np.datetime64("2020-01", "M")).astype("datetime64[D]"), 12),
        (np.arange(np.datetime64("2000-01", "M"), np.datetime64("2016-01", "M"), 3).astype("datetime64[D]"), 4),
        (np.arange(np.datetime64("2020-01-01T00"), np.datetime64("2022-01-01T00")), 8766),  # hourly, 24/7
    ],
    ids=["business-days", "calendar-days", "weekly", "monthly", "quarterly", "hourly-24h"],
)
def test_periods_per_year_counts_the_bars_of_a_year_or_more(timestamps: np.ndarray, expected: int) -> None:
    assert periods_per_year(timestamps) == expected


def test_periods_per_year_of_an_equity_index_is_about_252() -> None:
    from quantcrew.data.symbols import load_symbol

    assert periods_per_year(load_symbol("SP500").timestamps) == 252


@pytest.mark.parametrize(
    ("timestamps", "expected"),
    [
        (_business_days("2020-01-01", "2020-04-01"), 252),
        (np.arange(np.datetime64("2020-01-06"), np.datetime64("2020-06-01"), 7), 52),
        (np.arange(np.datetime64("2020-01", "M"), np.datetime64("2020-10", "M")).astype("datetime64[D]"), 12),
        (np.arange(np.datetime64("2020-01-06T00"), np.datetime64("2020-01-10T00")), 24 * 252),
    ],
    ids=["daily", "weekly", "monthly", "hourly"],
)
def test_periods_per_year_of_less_than_a_year_is_the_nominal_figure_of_its_spacing(timestamps: np.ndarray,
                                                                                   expected: int) -> None:
    assert periods_per_year(timestamps) == expected


def test_periods_per_year_refuses_what_it_cannot_infer() -> None:
    with pytest.raises(ValueError, match="at least two"):
        periods_per_year(np.array(["2020-01-01"], dtype="datetime64[D]"))
    with pytest.raises(ValueError, match="irregular"):
        periods_per_year(np.arange(np.datetime64("2020-01-01"), np.datetime64("2020-12-01"), 60))
