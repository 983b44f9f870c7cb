"""Appending bars to a symbol: agreeing overlaps only, gaps named, the data-folder file replaced atomically."""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.data.append import AppendError, GapRefused, OverlapDisagreement, append_bars, plan_append, write_bars
from quantcrew.data.errors import DataError
from quantcrew.data.loaders import load_file
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.samples import load_sample
from quantcrew.data.symbols import load_symbol

HEADER = "Date,Open,High,Low,Close,Volume"
NEXT_DAYS = [  # the first S&P 500 sessions of 2019, after the bundled series ends (2018-12-31)
    "2019-01-02,2476.96,2519.49,2467.47,2510.03,3733160000",
    "2019-01-03,2491.92,2493.14,2443.96,2447.89,3822860000",
    "2019-01-04,2474.33,2538.07,2474.33,2531.94,4213410000",
]


def _rows(bars: OHLCV, *, volume_offset: float = 0.0) -> list[str]:
    return [f"{t},{o!r},{h!r},{lo!r},{c!r},{v + volume_offset!r}" for t, o, h, lo, c, v in
            zip(bars.iso_timestamps(), bars.open.tolist(), bars.high.tolist(), bars.low.tolist(),
                bars.close.tolist(), bars.volume.tolist(), strict=True)]


def _csv(path: Path, rows: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


@pytest.fixture
def sp500() -> OHLCV:
    return load_sample("SP500")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_append_to_bundled_series_writes_merged_copy_in_data_folder(
    tmp_path: Path, data_dir: Path, sp500: OHLCV
) -> None:
    new = _csv(tmp_path / "new.csv", [*_rows(sp500.tail(3)), *NEXT_DAYS[:2]])

    plan = append_bars("spx", new, data_dir=data_dir)

    assert plan.written
    assert plan.stored.base == "bundled"
    assert plan.stored.target == data_dir / "SP500.csv"  # the canonical name, whatever alias was asked
    assert (plan.n_input, plan.n_overlap, plan.n_added) == (5, 3, 2)
    assert plan.overlap == ("2018-12-27", "2018-12-31")
    assert plan.added == ("2019-01-02", "2019-01-03")
    written = load_file(data_dir / "SP500.csv")
    assert len(written) == len(sp500) + 2
    for name, column in sp500.columns.items():  # the stored bars are kept bit for bit
        assert np.array_equal(written.columns[name][: len(sp500)], column)
    assert written.iso_timestamps()[-2:] == ["2019-01-02", "2019-01-03"]
    assert written.close[-1] == 2447.89


def test_second_append_extends_the_data_folder_file(tmp_path: Path, data_dir: Path, sp500: OHLCV) -> None:
    append_bars("SP500", _csv(tmp_path / "a.csv", NEXT_DAYS[:2]), data_dir=data_dir)
    plan = append_bars("SP500", _csv(tmp_path / "b.csv", NEXT_DAYS[1:]), data_dir=data_dir)

    assert plan.stored.base == "data_folder"
    assert (plan.n_overlap, plan.n_added) == (1, 1)
    assert len(load_file(data_dir / "SP500.csv")) == len(sp500) + 3


def test_overlap_volume_is_not_compared_and_the_stored_volume_is_kept(
    tmp_path: Path, data_dir: Path, sp500: OHLCV
) -> None:
    new = _csv(tmp_path / "new.csv", [*_rows(sp500.tail(2), volume_offset=5.0), NEXT_DAYS[0]])

    plan = append_bars("SP500", new, data_dir=data_dir)

    assert plan.volume_differs == 2
    assert plan.checked == ("close", "open", "high", "low")
    assert np.array_equal(load_file(data_dir / "SP500.csv").volume[: len(sp500)], sp500.volume)


def test_overlap_within_relative_tolerance_agrees(tmp_path: Path, data_dir: Path, sp500: OHLCV) -> None:
    last = sp500.tail(1)
    o, h, lo, c = (float(x[0]) for x in (last.open, last.high, last.low, last.close))
    close = c * (1 + 5e-7)
    row = f"{last.iso_timestamps()[0]},{o!r},{max(h, close)!r},{lo!r},{close!r},0"

    plan = append_bars("SP500", _csv(tmp_path / "new.csv", [row, NEXT_DAYS[0]]), data_dir=data_dir)

    assert plan.n_overlap == 1
    assert load_file(data_dir / "SP500.csv").close[len(sp500) - 1] == sp500.close[-1]


def test_disagreeing_overlap_is_refused_naming_the_date_and_both_values_and_the_file_is_unchanged(
    tmp_path: Path, data_dir: Path, sp500: OHLCV
) -> None:
    append_bars("SP500", _csv(tmp_path / "a.csv", NEXT_DAYS[:2]), data_dir=data_dir)
    before = (data_dir / "SP500.csv").read_bytes()
    wrong = NEXT_DAYS[1].replace("2447.89", "2450.0")
    bad = _csv(tmp_path / "b.csv", [NEXT_DAYS[0], wrong, NEXT_DAYS[2]])

    with pytest.raises(OverlapDisagreement) as info:
        append_bars("SP500", bad, data_dir=data_dir)

    text = str(info.value)
    assert "2019-01-03" in text and "2450.0" in text and "2447.89" in text
    assert info.value.column == "close" and info.value.reason == "disagree"
    assert (info.value.stored, info.value.new) == (2447.89, 2450.0)
    assert str(bad) in text
    assert (data_dir / "SP500.csv").read_bytes() == before


def test_bars_before_the_first_stored_bar_are_refused(tmp_path: Path, data_dir: Path) -> None:
    early = _csv(tmp_path / "early.csv", ["1998-12-31,1229.0,1230.0,1228.0,1229.5,0", NEXT_DAYS[0]])

    with pytest.raises(AppendError, match="1998-12-31 is before the first stored bar") as info:
        plan_append("SP500", early, data_dir=data_dir)
    assert info.value.reason == "before_start"


def test_a_bar_inserted_inside_the_stored_span_is_refused(tmp_path: Path, data_dir: Path) -> None:
    holiday = _csv(tmp_path / "holiday.csv", ["2018-12-25,2400.0,2410.0,2390.0,2405.0,0", NEXT_DAYS[0]])

    with pytest.raises(AppendError, match="2018-12-25 is inside the stored span") as info:
        plan_append("SP500", holiday, data_dir=data_dir)
    assert info.value.reason == "inserted"


def test_gap_after_the_stored_series_is_named_and_refused(tmp_path: Path, data_dir: Path) -> None:
    late = _csv(tmp_path / "late.csv", ["2019-03-01,2770.0,2790.0,2760.0,2784.0,0"])

    with pytest.raises(GapRefused) as info:
        append_bars("SP500", late, data_dir=data_dir)

    assert "between 2018-12-31 and 2019-03-01" in str(info.value)
    assert "max_gap_days=7" in str(info.value)
    assert [g.days for g in info.value.gaps] == [60.0]
    assert not data_dir.exists()


def test_gap_allowed_is_still_named_with_the_tolerance_loading_needs(tmp_path: Path, data_dir: Path) -> None:
    late = _csv(tmp_path / "late.csv", ["2019-03-01,2770.0,2790.0,2760.0,2784.0,0"])

    plan = append_bars("SP500", late, data_dir=data_dir, allow_gap=True)

    assert plan.written and len(plan.gaps) == 1
    assert any("data.max_gap_days >= 60" in note for note in plan.notes)
    assert plan.to_json()["gaps"] == [{"before": "2018-12-31", "after": "2019-03-01", "days": 60.0}]


def test_gap_inside_the_new_bars_is_named_too(tmp_path: Path, data_dir: Path) -> None:
    rows = [NEXT_DAYS[0], "2019-02-01,2700.0,2710.0,2690.0,2705.0,0"]

    with pytest.raises(GapRefused, match="between 2019-01-02 and 2019-02-01"):
        plan_append("SP500", _csv(tmp_path / "new.csv", rows), data_dir=data_dir)


def test_missing_file_is_named(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(DataError, match="no such file") as info:
        plan_append("SP500", tmp_path / "absent.csv", data_dir=data_dir)
    assert str(tmp_path / "absent.csv") in str(info.value)


def test_missing_column_is_named_with_the_file(tmp_path: Path, data_dir: Path) -> None:
    bad = _csv(tmp_path / "bad.csv", ["2019-01-02,2476.96,2519.49,2467.47"], header="Date,Open,High,Low")

    with pytest.raises(DataError, match="missing required column Close") as info:
        plan_append("SP500", bad, data_dir=data_dir)
    assert info.value.column == "Close"
    assert str(bad) in str(info.value)


def test_invalid_bars_are_refused_by_validation(tmp_path: Path, data_dir: Path) -> None:
    bad = _csv(tmp_path / "bad.csv", ["2019-01-02,2476.96,2400.0,2467.47,2510.03,0"])  # high below open

    with pytest.raises(DataError, match="high 2400 is below max"):
        plan_append("SP500", bad, data_dir=data_dir)


def test_dry_run_writes_nothing(tmp_path: Path, data_dir: Path) -> None:
    plan = append_bars("SP500", _csv(tmp_path / "new.csv", NEXT_DAYS), data_dir=data_dir, dry_run=True)

    assert plan.n_added == 3 and not plan.written
    assert not data_dir.exists()


def test_nothing_new_writes_nothing(tmp_path: Path, data_dir: Path, sp500: OHLCV) -> None:
    plan = append_bars("SP500", _csv(tmp_path / "old.csv", _rows(sp500.tail(4))), data_dir=data_dir)

    assert (plan.n_overlap, plan.n_added, plan.written) == (4, 0, False)
    assert not data_dir.exists()


def test_new_symbol_starts_a_data_folder_file_that_load_symbol_reads(tmp_path: Path, data_dir: Path) -> None:
    plan = append_bars("ACME", _csv(tmp_path / "acme.csv", NEXT_DAYS), data_dir=data_dir)

    assert plan.stored.base == "new" and plan.written
    bars = load_symbol("ACME", data_dir=data_dir)
    assert bars.symbol == "ACME" and len(bars) == 3


def test_a_file_dropped_in_the_data_folder_is_read_and_appended_to(tmp_path: Path, data_dir: Path) -> None:
    data_dir.mkdir()
    _csv(data_dir / "acme.csv", NEXT_DAYS[:2])
    assert len(load_symbol("ACME", data_dir=data_dir)) == 2

    plan = append_bars("ACME", _csv(tmp_path / "more.csv", NEXT_DAYS[1:]), data_dir=data_dir)

    assert plan.stored.base == "data_folder" and plan.stored.target == data_dir / "acme.csv"
    assert load_symbol("acme", data_dir=data_dir).iso_timestamps() == ["2019-01-02", "2019-01-03", "2019-01-04"]
    assert sorted(p.name for p in data_dir.iterdir()) == ["acme.csv"]  # no temporary left behind


def test_load_symbol_reads_the_appended_copy_before_the_bundled_series(tmp_path: Path, data_dir: Path) -> None:
    append_bars("SP500", _csv(tmp_path / "new.csv", NEXT_DAYS), data_dir=data_dir)

    for name in ("SP500", "spx"):
        bars = load_symbol(name, data_dir=data_dir)
        assert bars.symbol == "SP500"
        assert bars.iso_timestamps()[-1] == "2019-01-04"


@pytest.mark.parametrize("suffix", [".parquet", ".csv.gz"])
def test_an_existing_file_is_rewritten_in_its_own_format(tmp_path: Path, data_dir: Path, suffix: str) -> None:
    seed = load_file(_csv(tmp_path / "seed.csv", NEXT_DAYS[:2]), symbol="ACME")
    write_bars(seed, data_dir / f"ACME{suffix}")

    append_bars("ACME", _csv(tmp_path / "more.csv", NEXT_DAYS[2:]), data_dir=data_dir)

    assert sorted(p.name for p in data_dir.iterdir()) == [f"ACME{suffix}"]
    if suffix == ".csv.gz":
        assert gzip.decompress((data_dir / "ACME.csv.gz").read_bytes()).startswith(HEADER.encode())
    assert len(load_file(data_dir / f"ACME{suffix}")) == 3


def test_a_failed_replace_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_bars("ACME", _csv(tmp_path / "a.csv", NEXT_DAYS[:2]), data_dir=data_dir)
    before = (data_dir / "ACME.csv").read_bytes()

    def refuse(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        append_bars("ACME", _csv(tmp_path / "b.csv", NEXT_DAYS[2:]), data_dir=data_dir)

    assert (data_dir / "ACME.csv").read_bytes() == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["ACME.csv"]


def test_close_only_series_keeps_its_shape(tmp_path: Path, data_dir: Path) -> None:
    vix = load_sample("VIX")  # ends 2019-01-03
    new = _csv(tmp_path / "vix.csv", [f"{vix.iso_timestamps()[-1]},{float(vix.close[-1])!r}", "2019-01-04,21.38"],
               header="DATE,VIXCLS")

    plan = append_bars("VIX", new, data_dir=data_dir, price_column="VIXCLS")

    assert plan.checked == ("close",) and plan.n_added == 1
    bars = load_file(data_dir / "VIX.csv")
    assert bars.close[-1] == bars.open[-1] == bars.high[-1] == bars.low[-1] == 21.38


def test_close_only_file_is_refused_for_a_full_ohlc_series(tmp_path: Path, data_dir: Path) -> None:
    new = _csv(tmp_path / "closes.csv", ["2019-01-02,2510.03"], header="Date,Close")

    with pytest.raises(AppendError, match="closes only") as info:
        plan_append("SP500", new, data_dir=data_dir, price_column="Close")
    assert info.value.reason == "close_only"


@pytest.mark.parametrize("symbol", ["../ACME", "sub/ACME", ".hidden", "ACME.csv", ""])
def test_symbol_must_be_a_plain_name(tmp_path: Path, data_dir: Path, symbol: str) -> None:
    with pytest.raises(AppendError) as info:
        plan_append(symbol, _csv(tmp_path / "new.csv", NEXT_DAYS), data_dir=data_dir)
    assert info.value.reason == "bad_symbol"


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=40),
    split=st.floats(min_value=0.05, max_value=0.95),
    overlap=st.integers(min_value=0, max_value=10),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_appending_a_series_in_two_parts_rebuilds_it_exactly(n: int, split: float, overlap: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.02, n)))
    opens = close * np.exp(rng.normal(0.0, 0.01, n))
    high = np.maximum(opens, close) * (1 + rng.uniform(0.0, 0.01, n))
    low = np.minimum(opens, close) * (1 - rng.uniform(0.0, 0.01, n))
    volume = rng.integers(0, 10**9, n).astype(np.float64)
    days = np.datetime64("2020-01-01", "D") + np.arange(n) * np.timedelta64(1, "D")
    full = OHLCV("ACME", days.astype("datetime64[ns]"), opens, high, low, close, volume)
    cut = max(1, min(n - 1, int(n * split)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        write_bars(full.head(cut), folder / "ACME.csv")
        write_bars(full.iloc(slice(max(0, cut - overlap), None)), Path(tmp) / "more.csv")

        plan = append_bars("ACME", Path(tmp) / "more.csv", data_dir=folder)

        assert plan.n_overlap == min(overlap, cut)
        back = load_file(folder / "ACME.csv")
        assert np.array_equal(back.timestamps, full.timestamps)
        for name, column in full.columns.items():
            assert np.array_equal(back.columns[name], column), name
