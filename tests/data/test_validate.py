"""validate_ohlcv: every problem reported, with its row and column."""

from __future__ import annotations

import numpy as np
import pytest

from quantcrew.data.errors import MAX_PROBLEMS, DataError
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.validate import find_gaps, validate_ohlcv


def _bars(n: int = 10, *, start: str = "2020-01-01", step_days: int = 1, **overrides: object) -> OHLCV:
    ts = np.datetime64(start, "ns") + np.arange(n) * np.timedelta64(step_days, "D")
    close = 100.0 + np.arange(n, dtype=np.float64)
    cols: dict[str, object] = {
        "timestamps": ts,
        "open": close - 0.5,
        "high": close + 1.0,
        "low": close - 1.0,
        "close": close.copy(),
        "volume": np.full(n, 1_000.0),
    }
    cols.update(overrides)
    return OHLCV(symbol="TEST", meta={}, **cols)  # type: ignore[arg-type]


def _raises(bars: OHLCV, **kwargs: object) -> DataError:
    with pytest.raises(DataError) as info:
        validate_ohlcv(bars, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_validate_good_bars_returns_same_object() -> None:
    bars = _bars(30)
    assert validate_ohlcv(bars) is bars


def test_validate_empty_series_raises() -> None:
    err = _raises(_bars(0))
    assert "empty" in str(err)
    assert err.source == "TEST"


def test_validate_nan_and_inf_name_row_and_column() -> None:
    bars = _bars(10)
    bars.close[3] = np.nan
    bars.high[7] = np.inf
    err = _raises(bars, source="data/X.csv")
    text = str(err)
    assert text.startswith("data/X.csv: ")
    assert "row 3, column 'close': close is NaN" in text
    assert "row 7, column 'high': high is inf" in text
    assert (err.row, err.column) == (3, "close")


def test_validate_non_positive_price_raises() -> None:
    bars = _bars(5)
    bars.low[2] = -1.0
    bars.open[4] = 0.0
    text = str(_raises(bars))
    assert "row 2, column 'low': low -1 is not positive" in text
    assert "row 4, column 'open': open 0 is not positive" in text


def test_validate_duplicate_and_unsorted_reported_separately() -> None:
    ts = np.array(["2020-01-01", "2020-01-02", "2020-01-02", "2020-01-05", "2020-01-04"], dtype="datetime64[ns]")
    err = _raises(_bars(5, timestamps=ts))
    text = str(err)
    assert "row 2, column 'timestamp': duplicate timestamp 2020-01-02 (same as row 1)" in text
    assert "row 4, column 'timestamp': 2020-01-04 comes before row 3 (2020-01-05)" in text
    assert "sort=True" in text
    assert err.n_problems == 2


def test_validate_high_below_open_close_uses_readable_message() -> None:
    bars = _bars(20)
    bars.high[17] = 101.2
    bars.open[17] = 102.0
    bars.close[17] = 101.5
    bars.low[17] = 100.0
    err = _raises(bars, source="data/AAPL.csv")
    assert str(err) == "data/AAPL.csv: row 17, column 'high': high 101.2 is below max(open, close) 102"


def test_validate_low_above_open_close_raises() -> None:
    bars = _bars(5)
    bars.low[1] = bars.close[1] - 0.1  # open is close - 0.5, so min(open, close) < low
    assert "row 1, column 'low': low 100.9 is above min(open, close) 100.5" in str(_raises(bars))


def test_validate_negative_volume_raises() -> None:
    bars = _bars(5)
    bars.volume[0] = -5.0
    assert "row 0, column 'volume': volume -5 is negative" in str(_raises(bars))


def test_validate_gap_names_row_and_both_dates() -> None:
    ts = np.array(["2020-01-01", "2020-01-02", "2020-01-15", "2020-01-16"], dtype="datetime64[ns]")
    err = _raises(_bars(4, timestamps=ts))
    assert str(err) == (
        "TEST: row 2, column 'timestamp': gap of 13 days between 2020-01-02 (row 1) and 2020-01-15 "
        "exceeds max_gap_days=7"
    )


def test_validate_gap_at_limit_passes_and_none_disables() -> None:
    assert len(validate_ohlcv(_bars(5, step_days=7))) == 5
    _raises(_bars(5, step_days=8))
    assert len(validate_ohlcv(_bars(5, step_days=31), max_gap_days=None)) == 5


def test_validate_reports_every_kind_of_problem_at_once() -> None:
    bars = _bars(10)
    bars.close[1] = np.nan
    bars.volume[4] = -1.0
    bars.high[6] = 1.0
    err = _raises(bars)
    assert err.n_problems == 3
    assert [p.split(":")[0] for p in err.problems] == ["row 1, column 'close'", "row 4, column 'volume'",
                                                       "row 6, column 'high'"]
    assert str(err).startswith("TEST: 3 problems found:\n  - row 1")


def test_validate_many_problems_capped_with_count() -> None:
    bars = _bars(100)
    bars.close[:] = np.nan
    err = _raises(bars)
    assert err.n_problems == 100
    assert len(err.problems) == MAX_PROBLEMS + 1
    assert err.problems[-1] == f"... and {100 - MAX_PROBLEMS} more"
    assert err.problems[0].startswith("row 0, ")


def test_validate_ragged_columns_raises() -> None:
    err = _raises(_bars(5, volume=np.ones(4)))
    assert "column 'volume': has 4 values but there are 5 timestamps" in str(err)


def test_validate_missing_timestamp_raises() -> None:
    ts = np.array(["2020-01-01", "NaT", "2020-01-03"], dtype="datetime64[ns]")
    assert "row 1, column 'timestamp': timestamp is missing" in str(_raises(_bars(3, timestamps=ts)))


def test_validate_close_only_series_reports_nan_once() -> None:
    close = np.array([10.0, np.nan, 11.0])
    bars = _bars(3, open=close.copy(), high=close.copy(), low=close.copy(), close=close)
    err = _raises(bars)
    assert err.n_problems == 1
    assert err.column == "close"


def test_validate_intraday_timestamps_show_time() -> None:
    ts = np.array(["2020-01-01T09:30", "2020-01-01T09:30"], dtype="datetime64[ns]")
    assert "duplicate timestamp 2020-01-01T09:30:00" in str(_raises(_bars(2, timestamps=ts)))


def test_validate_large_series_passes() -> None:
    bars = _bars(25_000)
    assert validate_ohlcv(bars, max_gap_days=None) is bars


def test_find_gaps_returns_rows_dates_and_lengths() -> None:
    ts = np.array(["2020-01-01", "2020-01-10", "2020-01-11", "2020-02-01"], dtype="datetime64[ns]")
    gaps = find_gaps(ts, 7)
    assert [(g.row, g.days) for g in gaps] == [(1, 9.0), (3, 21.0)]
    assert str(gaps[0].before.astype("datetime64[D]")) == "2020-01-01"
    assert find_gaps(ts[:1], 7) == []
