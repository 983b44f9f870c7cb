"""Panels loaded from symbols (bundled samples, files) and from a folder of data files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from quantcrew.data.errors import DataError, UnknownSymbolError
from quantcrew.data.panel import AlignmentError
from quantcrew.data.panel_loaders import load_panel, load_panel_dir
from quantcrew.data.samples import load_sample
from tests.data.test_panel import _days, needs_arch


def _write_csv(path: Path, dates: list[str], close: list[float]) -> None:
    rows = [f"{d},{c},{c},{c},{c}" for d, c in zip(dates, close, strict=True)]
    path.write_text("Date,Open,High,Low,Close\n" + "\n".join(rows) + "\n")


# --- load_panel --------------------------------------------------------------------------


@needs_arch
def test_load_panel_sp500_nasdaq_has_every_shared_day() -> None:
    panel = load_panel(["SP500", "NASDAQ"])
    assert panel.close.shape == (5031, 2)
    assert panel.log_returns().shape == (5030, 2)
    assert panel.meta["requested"] == ["SP500", "NASDAQ"]


@needs_arch
def test_load_panel_alias_of_the_same_sample_is_refused() -> None:
    with pytest.raises(AlignmentError, match="SP500 \\(asked as 'SP500', 'spx'\\)"):
        load_panel(["SP500", "spx"])


@needs_arch
def test_load_panel_crude_with_sp500_is_monthly() -> None:
    panel = load_panel(["SP500", "CRUDE"])
    sp, crude = load_sample("SP500"), load_sample("CRUDE")
    expected = sorted(set(sp.iso_timestamps()) & set(crude.iso_timestamps()))
    assert panel.iso_timestamps() == expected
    assert all(d.endswith("-15") for d in expected)  # crude is stamped mid-month
    assert 150 < len(panel) < 240  # the 15th is a trading day in about 2 months out of 3, 1999-2018
    assert panel.meta["frequency"] == "monthly"
    assert panel.meta["input_frequency"] == {"SP500": "daily", "CRUDE": "monthly"}


@needs_arch
def test_load_panel_window_applies_before_the_overlap_check() -> None:
    panel = load_panel(["SP500", "VIX"], start="2015-01-01", end="2015-12-31")
    assert panel.iso_timestamps()[0] == "2015-01-02" and panel.iso_timestamps()[-1] == "2015-12-31"
    with pytest.raises(AlignmentError, match="only 0 common dates.*VIX \\(no bars\\)"):
        load_panel(["SP500", "VIX"], end="2013-12-31")


def test_load_panel_unknown_symbol_raises() -> None:
    with pytest.raises(UnknownSymbolError):
        load_panel(["NO_SUCH_SYMBOL_XYZ"])


# --- load_panel_dir ----------------------------------------------------------------------


def test_load_panel_dir_aligns_partially_overlapping_files(tmp_path: Path) -> None:
    first, second = _days("2021-01-04", 60), _days("2021-02-01", 60)
    _write_csv(tmp_path / "BBB.csv", second, [float(50 + i) for i in range(60)])
    _write_csv(tmp_path / "AAA.csv", first, [float(100 + i) for i in range(60)])
    (tmp_path / "notes.txt").write_text("not data")
    panel = load_panel_dir(tmp_path)
    common = sorted(set(first) & set(second))
    assert panel.symbols == ("AAA", "BBB")  # sorted file names
    assert panel.iso_timestamps() == common
    offset = first.index(common[0])
    np.testing.assert_array_equal(panel.column("AAA"), [float(100 + offset + i) for i in range(len(common))])
    np.testing.assert_array_equal(panel.column("BBB"), [float(50 + i) for i in range(len(common))])
    assert panel.meta["folder"] == str(tmp_path)


def test_load_panel_dir_reads_parquet_with_a_pattern(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    dates = _days("2021-01-04", 40)
    for name, base in (("X", 10.0), ("Y", 20.0)):
        close = [base + i for i in range(40)]
        table = pa.table({"Date": np.array(dates, dtype="datetime64[ns]"), "Open": close, "High": close,
                          "Low": close, "Close": close})
        pq.write_table(table, tmp_path / f"{name}.parquet")
    _write_csv(tmp_path / "Z.csv", dates, [1.0] * 40)
    panel = load_panel_dir(tmp_path, pattern="*.parquet")
    assert panel.symbols == ("X", "Y") and len(panel) == 40
    np.testing.assert_array_equal(panel.close[0], [10.0, 20.0])


def test_load_panel_dir_without_matching_files_lists_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "prices.txt").write_text("x")
    with pytest.raises(DataError, match="no data file matches '\\*.csv'.*files present: prices.txt"):
        load_panel_dir(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        load_panel_dir(tmp_path / "missing")


def test_load_panel_dir_same_stem_twice_is_refused(tmp_path: Path) -> None:
    dates = _days("2021-01-04", 40)
    _write_csv(tmp_path / "AAA.csv", dates, [1.0] * 40)
    (tmp_path / "AAA.csv.gz").write_bytes(gzip.compress((tmp_path / "AAA.csv").read_bytes()))
    with pytest.raises(AlignmentError, match="repeated symbol 'AAA'"):
        load_panel_dir(tmp_path, pattern="AAA*")
