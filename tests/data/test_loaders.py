"""Loaders: CSV, gzipped CSV, Parquet; every bad file gives one clear DataError."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from quantcrew.data.errors import DataError
from quantcrew.data.loaders import load_csv, load_file, load_parquet, to_payload_dict
from quantcrew.data.samples import load_sample
from quantcrew.ml_server.schemas.common import OHLCVPayload

GOOD = """Date,Open,High,Low,Close,Adj Close,Volume
2020-01-02,100,102,99,101,100.5,1000
2020-01-03,101,103,100,102,101.5,1100
2020-01-06,102,104,101,103,102.5,1200
2020-01-07,103,105,102,104,103.5,1300
"""


def _write(tmp_path: Path, text: str, name: str = "AAPL.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def _error(path: Path, **kwargs: object) -> DataError:
    with pytest.raises(DataError) as info:
        load_file(path, **kwargs)  # type: ignore[arg-type]
    return info.value


def _replace_line(text: str, index: int, line: str) -> str:
    lines = text.splitlines()
    lines[index] = line
    return "\n".join(lines) + "\n"


# --- good files ----------------------------------------------------------------------------


def test_load_csv_reads_columns_and_ignores_adj_close(tmp_path: Path) -> None:
    bars = load_csv(_write(tmp_path, GOOD))
    assert bars.symbol == "AAPL"
    assert len(bars) == 4
    assert bars.timestamps.dtype == np.dtype("datetime64[ns]")
    assert bars.iso_timestamps() == ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]
    np.testing.assert_array_equal(bars.close, [101.0, 102.0, 103.0, 104.0])
    np.testing.assert_array_equal(bars.volume, [1000.0, 1100.0, 1200.0, 1300.0])
    assert bars.meta["source"].endswith("AAPL.csv")
    assert bars.meta["format"] == "csv"


def test_load_csv_column_names_any_case_and_order_without_volume(tmp_path: Path) -> None:
    text = "close, LOW ,HIGH,open,TimeStamp\n10,9,11,10,2021-03-01\n11,10,12,10.5,2021-03-02\n"
    bars = load_csv(_write(tmp_path, text), symbol="X")
    assert bars.symbol == "X"
    np.testing.assert_array_equal(bars.open, [10.0, 10.5])
    np.testing.assert_array_equal(bars.volume, [0.0, 0.0])
    assert "volume" not in to_payload_dict(bars)


def test_load_csv_us_dates(tmp_path: Path) -> None:
    text = "Date,Open,High,Low,Close\n1/4/1999,1,2,0.5,1.5\n12/31/1999,1,2,0.5,1.5\n"
    bars = load_csv(_write(tmp_path, text), max_gap_days=None)
    assert bars.iso_timestamps() == ["1999-01-04", "1999-12-31"]


def test_load_csv_iso_datetimes_and_utc_offsets(tmp_path: Path) -> None:
    text = (
        "datetime,open,high,low,close\n"
        "2020-01-02 09:30:00,1,2,0.5,1.5\n"
        "2020-01-02T09:31:00Z,1,2,0.5,1.5\n"
        "2020-01-02T04:32:00-05:00,1,2,0.5,1.5\n"
    )
    bars = load_csv(_write(tmp_path, text))
    assert bars.iso_timestamps() == ["2020-01-02T09:30:00", "2020-01-02T09:31:00", "2020-01-02T09:32:00"]


def test_load_csv_joins_separate_date_and_time_columns(tmp_path: Path) -> None:
    text = "Date,Time,Open,High,Low,Close\n2020-01-02,09:30,1,2,0.5,1.5\n2020-01-02,09:35,1,2,0.5,1.5\n"
    bars = load_csv(_write(tmp_path, text))
    assert bars.iso_timestamps() == ["2020-01-02T09:30:00", "2020-01-02T09:35:00"]


def test_load_csv_gzipped(tmp_path: Path) -> None:
    bars = load_file(_write(tmp_path, GOOD, "MSFT.csv.gz"))
    assert bars.symbol == "MSFT"
    assert len(bars) == 4


def test_load_csv_close_only_with_price_column(tmp_path: Path) -> None:
    text = "\ufeffDATE,Price\n2020-01-02,5.5\n2020-01-03,6\n"
    bars = load_csv(_write(tmp_path, text), price_column="price")
    assert bars.meta["close_only"] is True
    for col in (bars.open, bars.high, bars.low):
        np.testing.assert_array_equal(col, bars.close)
    assert bars.close.tolist() == [5.5, 6.0]


def test_load_csv_skips_blank_lines(tmp_path: Path) -> None:
    text = GOOD.replace("\n2020-01-03", "\n\n2020-01-03") + "\n\n"
    assert len(load_csv(_write(tmp_path, text))) == 4


def test_load_csv_sort_true_sorts_unsorted_rows(tmp_path: Path) -> None:
    lines = GOOD.splitlines()
    text = "\n".join([lines[0], lines[3], lines[1], lines[4], lines[2]]) + "\n"
    bars = load_csv(_write(tmp_path, text), sort=True)
    assert bars.iso_timestamps() == ["2020-01-02", "2020-01-03", "2020-01-06", "2020-01-07"]
    np.testing.assert_array_equal(bars.close, [101.0, 102.0, 103.0, 104.0])
    assert bars.meta["sorted"] is True


def test_load_csv_validate_false_returns_bad_bars(tmp_path: Path) -> None:
    text = _replace_line(GOOD, 2, "2020-01-03,101,103,100,-102,0,1100")
    bars = load_csv(_write(tmp_path, text), validate=False)
    assert bars.close[1] == -102.0


def test_load_csv_large_file(tmp_path: Path) -> None:
    n = 25_000
    days = np.datetime64("1950-01-02") + np.arange(n)
    close = np.round(100.0 + np.sin(np.arange(n)), 4)
    body = "\n".join(map(",".join, zip(days.astype(str).tolist(), *(np.char.mod("%.4f", a).tolist() for a in (
        close, close + 1, close - 1, close, close * 10)), strict=True)))
    path = _write(tmp_path, "Date,Open,High,Low,Close,Volume\n" + body + "\n")
    bars = load_csv(path)
    assert len(bars) == n
    assert bars.iso_timestamps()[-1] == str(days[-1])
    np.testing.assert_allclose(bars.close, close)
    np.testing.assert_allclose(bars.volume, close * 10, rtol=1e-9)


# --- bad files -----------------------------------------------------------------------------


def test_load_nan_cell_names_row_and_column(tmp_path: Path) -> None:
    path = _write(tmp_path, _replace_line(GOOD, 3, "2020-01-06,102,NaN,101,103,102.5,1200"))
    err = _error(path)
    assert str(err) == f"{path}: row 2, column 'high': high is NaN (missing)"
    assert (err.row, err.column, err.source) == (2, "high", str(path))


def test_load_empty_cell_reads_as_missing(tmp_path: Path) -> None:
    path = _write(tmp_path, _replace_line(GOOD, 1, "2020-01-02,100,102,99,,100.5,1000"))
    assert "row 0, column 'close': close is NaN (missing)" in str(_error(path))


def test_load_text_in_number_column_names_row_column_and_value(tmp_path: Path) -> None:
    text = _replace_line(GOOD, 2, "2020-01-03,101,abc,100,102,101.5,1100")
    text = _replace_line(text, 4, "2020-01-07,103,105,102,104,103.5,lots")
    err = _error(_write(tmp_path, text))
    assert err.problems == [
        "row 1, column 'High': 'abc' is not a number",
        "row 3, column 'Volume': 'lots' is not a number",
    ]
    assert (err.row, err.column) == (1, "High")


def test_load_duplicate_date_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, _replace_line(GOOD, 3, "2020-01-03,102,104,101,103,102.5,1200"))
    assert "row 2, column 'timestamp': duplicate timestamp 2020-01-03 (same as row 1)" in str(_error(path))


def test_load_unsorted_rows_raise_without_sort(tmp_path: Path) -> None:
    lines = GOOD.splitlines()
    path = _write(tmp_path, "\n".join([lines[0], lines[1], lines[3], lines[2], lines[4]]) + "\n")
    text = str(_error(path))
    assert "row 2, column 'timestamp': 2020-01-03 comes before row 1 (2020-01-06)" in text


def test_load_high_below_close_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, _replace_line(GOOD, 2, "2020-01-03,101,101.5,100,102,101.5,1100"))
    assert str(_error(path)) == f"{path}: row 1, column 'high': high 101.5 is below max(open, close) 102"


def test_load_negative_price_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, _replace_line(GOOD, 4, "2020-01-07,103,105,-102,104,103.5,1300"))
    assert "row 3, column 'low': low -102 is not positive" in str(_error(path))


def test_load_gap_raises_and_tolerance_is_configurable(tmp_path: Path) -> None:
    path = _write(tmp_path, _replace_line(GOOD, 4, "2020-01-27,103,105,102,104,103.5,1300"))
    assert "row 3, column 'timestamp': gap of 21 days between 2020-01-06 (row 2) and 2020-01-27" in str(_error(path))
    assert len(load_file(path, max_gap_days=30)) == 4


def test_load_missing_column_names_it_and_lists_found(tmp_path: Path) -> None:
    text = "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != 3) for line in GOOD.splitlines())
    path = _write(tmp_path, text + "\n")
    err = _error(path)
    assert str(err) == (
        f"{path}: missing required column Low; columns found: 'Date', 'Open', 'High', 'Close', 'Adj Close', 'Volume'"
    )
    assert err.column == "Low"


def test_load_missing_time_column_lists_found(tmp_path: Path) -> None:
    path = _write(tmp_path, "Day,Open,High,Low,Close\nx,1,1,1,1\n")
    assert "no time column" in str(_error(path))
    assert "'Day', 'Open'" in str(_error(path))


def test_load_unnamed_first_column_is_the_time_index_a_dataframe_wrote(tmp_path: Path) -> None:
    path = _write(tmp_path, ",Open,High,Low,Close,Volume\n2004-08-19,100,104.06,95.96,100.34,22351900\n"
                            "2004-08-20,101.01,109.08,100.5,108.31,11428600\n")
    bars = load_csv(path)
    assert bars.iso_timestamps() == ["2004-08-19", "2004-08-20"] and bars.close.tolist() == [100.34, 108.31]


def test_load_unnamed_first_column_that_is_not_times_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, ",Open,High,Low,Close\nabc,1,1,1,1\n")
    assert str(path) in str(_error(path))


def test_load_close_only_without_price_column_hints(tmp_path: Path) -> None:
    path = _write(tmp_path, "Date,Close\n2020-01-02,1\n")
    assert "price_column" in str(_error(path))


def test_load_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    err = _error(path)
    assert str(err) == f"{path}: no such file"
    with pytest.raises(DataError, match="no such file"):
        load_csv(path)
    with pytest.raises(DataError, match="no such file"):
        load_parquet(tmp_path / "nope.parquet")


def test_load_unknown_suffix_lists_supported(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD, "AAPL.xlsx")
    err = _error(path)
    assert str(path) in str(err)
    assert ".csv, .csv.gz, .parquet, .pq" in str(err)


def test_load_directory_is_not_a_file(tmp_path: Path) -> None:
    assert "not a file" in str(_error(tmp_path))


def test_load_empty_file_raises(tmp_path: Path) -> None:
    assert "the file is empty" in str(_error(_write(tmp_path, "")))
    assert "the file is empty" in str(_error(_write(tmp_path, "\n\n", "blank.csv")))


def test_load_header_only_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, "Date,Open,High,Low,Close,Volume\n")
    assert str(_error(path)) == f"{path}: no data rows under the header"


def test_load_unparsable_date_names_row_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, _replace_line(GOOD, 3, "2020-13-45,102,104,101,103,102.5,1200"))
    err = _error(path)
    assert err.problems == ["row 2, column 'Date': cannot read date '2020-13-45': this file uses ISO dates such as "
                            "2020-01-02"]


def test_load_impossible_us_date_and_mixed_formats(tmp_path: Path) -> None:
    text = "Date,Open,High,Low,Close\n2/28/2020,1,2,0.5,1\n2/30/2020,1,2,0.5,1\n2020-03-02,1,2,0.5,1\n"
    err = _error(_write(tmp_path, text))
    assert err.n_problems == 2
    assert err.problems[0].startswith("row 1, column 'Date': cannot read date '2/30/2020'")
    assert err.problems[1].startswith("row 2, column 'Date': cannot read date '2020-03-02'")


def test_load_unknown_date_format_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, "Date,Open,High,Low,Close\nJan 2 2020,1,2,0.5,1\n")
    assert "row 0, column 'Date': cannot read date 'Jan 2 2020': expected ISO" in str(_error(path))


def test_load_ragged_row_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, _replace_line(GOOD, 2, "2020-01-03,101,103"))
    assert "row 1: has 3 fields but the header has 7" in str(_error(path))


def test_load_duplicate_column_raises(tmp_path: Path) -> None:
    path = _write(tmp_path, "Date,Open,High,Low,Close,close\n2020-01-02,1,2,0.5,1,1\n")
    assert "column 'close': appears twice" in str(_error(path))


def test_load_binary_garbage_raises_data_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv.gz"
    path.write_bytes(b"this is not gzip")
    assert "cannot read the file" in str(_error(path))


# --- parquet ---------------------------------------------------------------------------------


def test_load_parquet_round_trip_matches_csv(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = load_csv(_write(tmp_path, GOOD))
    table = pa.table({
        "Date": pa.array(src.timestamps.astype("datetime64[ms]")),
        "OPEN": src.open, "High": src.high, "Low": src.low, "Close": src.close,
        "Volume": pa.array(src.volume.astype(np.int64)),
    })
    path = tmp_path / "AAPL.parquet"
    pq.write_table(table, path)
    bars = load_file(path)
    assert bars.symbol == "AAPL"
    assert bars.meta["format"] == "parquet"
    np.testing.assert_array_equal(bars.timestamps, src.timestamps)
    for name, col in src.columns.items():
        np.testing.assert_array_equal(bars.columns[name], col)


def test_load_parquet_string_dates_date32_and_utc(tmp_path: Path) -> None:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    prices = {"open": [1.0, 1.0], "high": [2.0, 2.0], "low": [0.5, 0.5], "close": [1.5, 1.5]}
    cases = {
        "s.pq": pa.array(["1/4/1999", "1/5/1999"]),
        "d.pq": pa.array([dt.date(1999, 1, 4), dt.date(1999, 1, 5)], type=pa.date32()),
        "z.pq": pa.array([dt.datetime(1999, 1, 4, 14, 30, tzinfo=dt.UTC), dt.datetime(1999, 1, 5, 14, 30,
                                                                                       tzinfo=dt.UTC)]),
    }
    for name, times in cases.items():
        pq.write_table(pa.table({"date": times, **prices}), tmp_path / name)
    assert load_parquet(tmp_path / "s.pq").iso_timestamps() == ["1999-01-04", "1999-01-05"]
    assert load_parquet(tmp_path / "d.pq").iso_timestamps() == ["1999-01-04", "1999-01-05"]
    assert load_parquet(tmp_path / "z.pq").iso_timestamps() == ["1999-01-04T14:30:00", "1999-01-05T14:30:00"]


def test_load_parquet_nulls_and_text_numbers_reported(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "date": pa.array(["2020-01-02", "2020-01-03"]),
        "open": pa.array([1.0, None]), "high": pa.array(["2", "x"]), "low": [0.5, 0.5], "close": [1.5, 1.5],
    })
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    err = _error(path)
    assert err.problems == ["row 1, column 'high': 'x' is not a number"]
    pq.write_table(table.set_column(2, "high", pa.array([2.0, 2.0])), path)
    assert "row 1, column 'open': open is NaN (missing)" in str(_error(path))


def test_load_parquet_missing_column_and_bad_file(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"date": ["2020-01-02"], "close": [1.0]}), path)
    assert "missing required columns Open, High, Low" in str(_error(path))
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    assert "not a readable Parquet file" in str(_error(junk))


# --- payload -------------------------------------------------------------------------------


def test_to_payload_dict_validates_as_ohlcv_payload() -> None:
    bars = load_sample("SP500").tail(250)
    payload = to_payload_dict(bars)
    model = OHLCVPayload.model_validate(payload)
    assert len(model) == 250
    assert payload["timestamps"][-1] == "2018-12-31"
    assert payload["close"][-1] == pytest.approx(2506.850098)
    assert model.volume is not None and model.volume[-1] == pytest.approx(3_442_870_000.0)


def test_to_payload_dict_close_only_sample_validates() -> None:
    payload = to_payload_dict(load_sample("VIX").tail(100))
    assert "volume" not in payload
    assert len(OHLCVPayload.model_validate(payload)) == 100


def test_load_reports_bad_dates_and_bad_numbers_together(tmp_path: Path) -> None:
    text = _replace_line(GOOD, 1, "2020-01-32,100,102,99,101,100.5,1000")
    text = _replace_line(text, 3, "2020-01-06,102,104,1O1,103,102.5,1200")
    err = _error(_write(tmp_path, text))
    assert err.n_problems == 2
    assert err.problems[0].startswith("row 0, column 'Date': cannot read date '2020-01-32'")
    assert err.problems[1] == "row 2, column 'Low': '1O1' is not a number"


def test_load_parquet_null_timestamp_reported(tmp_path: Path) -> None:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    times = pa.array([dt.datetime(2020, 1, 2), None], type=pa.timestamp("us"))
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"Timestamp": times, "open": [1.0, 1.0], "high": [2.0, 2.0], "low": [0.5, 0.5],
                             "close": [1.5, 1.5]}), path)
    assert str(_error(path)) == f"{path}: row 1, column 'Timestamp': time is missing"
