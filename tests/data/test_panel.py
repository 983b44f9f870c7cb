"""Panel: several series on their common dates, built from bars by ``align``."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from quantcrew.data.errors import DataError
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.panel import AlignmentError, Panel, align, timestamp_range
from quantcrew.data.samples import load_sample
from quantcrew.ml_server.schemas.matrix import MatrixPayload

needs_arch = pytest.mark.skipif(importlib.util.find_spec("arch") is None, reason="bundled samples need arch")


def _bars(symbol: str, dates: list[str], close: list[float], *, time: str = "") -> OHLCV:
    ts = np.array([d + time for d in dates], dtype="datetime64[ns]")
    c = np.asarray(close, dtype=np.float64)
    return OHLCV(symbol=symbol, timestamps=ts, open=c, high=c, low=c, close=c, volume=np.zeros_like(c))


def _days(start: str, n: int) -> list[str]:
    days = np.busday_offset(np.datetime64(start, "D"), np.arange(n), roll="forward")
    return [str(d) for d in days]


# --- align -------------------------------------------------------------------------------


@needs_arch
def test_align_bundled_samples_keeps_only_common_dates() -> None:
    sp = load_sample("SP500").between("2010-01-01", "2012-12-31")
    nq = load_sample("NASDAQ").between("2011-06-01", "2014-12-31")
    panel = align([sp, nq])
    expected = sorted(set(sp.iso_timestamps()) & set(nq.iso_timestamps()))
    assert panel.iso_timestamps() == expected
    assert panel.iso_timestamps()[0] == "2011-06-01" and panel.iso_timestamps()[-1] == "2012-12-31"
    assert panel.close.shape == (len(expected), 2)
    assert panel.symbols == ("SP500", "NASDAQ") and panel.n_assets == 2 and len(panel) == len(expected)
    sp_by_day = dict(zip(sp.iso_timestamps(), sp.close.tolist(), strict=True))
    nq_by_day = dict(zip(nq.iso_timestamps(), nq.close.tolist(), strict=True))
    np.testing.assert_array_equal(panel.column("SP500"), [sp_by_day[d] for d in expected])
    np.testing.assert_array_equal(panel.column("NASDAQ"), [nq_by_day[d] for d in expected])
    assert panel.meta["dropped"] == {"SP500": len(sp) - len(expected), "NASDAQ": len(nq) - len(expected)}
    assert panel.meta["frequency"] == "daily"


def test_align_matches_dates_whose_times_of_day_differ() -> None:
    dates = _days("2020-01-02", 40)
    a = _bars("A", dates, list(np.linspace(100, 120, 40)))  # midnight
    b = _bars("B", dates[5:], list(np.linspace(50, 60, 35)), time="T21:00:00")  # 16:00 New York, in UTC
    panel = align([a, b])
    assert panel.iso_timestamps() == dates[5:]  # midnight dates, no time of day left
    np.testing.assert_allclose(panel.close[:, 0], a.close[5:])
    assert panel.meta["aligned_on"] == "date"


def test_align_short_overlap_names_symbols_and_ranges() -> None:
    a = _bars("AAA", _days("2020-01-01", 40), [100.0] * 40)
    b = _bars("BBB", _days("2020-02-20", 40), [50.0] * 40)
    with pytest.raises(AlignmentError) as info:
        align([a, b], min_overlap=30)
    message = str(info.value)
    n_common = len(set(_days("2020-01-01", 40)) & set(_days("2020-02-20", 40)))
    assert f"only {n_common} common dates across AAA, BBB (need at least 30)" in message
    assert "AAA 2020-01-01..2020-02-25 (40 bars)" in message
    assert "BBB 2020-02-20..2020-04-15 (40 bars)" in message
    assert info.value.symbols == ("AAA", "BBB")
    assert isinstance(info.value, DataError)
    assert len(align([a, b], min_overlap=n_common)) == n_common  # the same overlap passes a lower bar


def test_align_disjoint_ranges_says_they_do_not_overlap() -> None:
    a = _bars("AAA", _days("2020-01-01", 40), [100.0] * 40)
    b = _bars("BBB", _days("2021-01-01", 40), [50.0] * 40)
    with pytest.raises(AlignmentError, match="only 0 common dates.*do not overlap"):
        align([a, b])


def test_align_repeated_symbol_is_refused() -> None:
    a = _bars("AAA", _days("2020-01-01", 40), [100.0] * 40)
    with pytest.raises(AlignmentError, match="repeated symbol 'AAA' \\(2 times\\)"):
        align([a, a])


def test_align_empty_list_is_refused() -> None:
    with pytest.raises(AlignmentError, match="no series to align"):
        align([])


def test_align_unknown_how_is_refused() -> None:
    a = _bars("AAA", _days("2020-01-01", 40), [100.0] * 40)
    with pytest.raises(ValueError, match="how must be 'inner'"):
        align([a], how="outer")  # type: ignore[arg-type]


def test_align_intraday_needs_on_timestamp() -> None:
    times = np.array(["2020-01-02T10:00", "2020-01-02T11:00", "2020-01-03T10:00", "2020-01-03T11:00"],
                     dtype="datetime64[ns]")
    close = np.array([1.0, 2.0, 3.0, 4.0])
    a = OHLCV("A", times, close, close, close, close, np.zeros(4))
    b = OHLCV("B", times[1:], close[1:] * 2, close[1:] * 2, close[1:] * 2, close[1:] * 2, np.zeros(3))
    with pytest.raises(AlignmentError, match="several bars on one date.*on='timestamp'"):
        align([a, b], min_overlap=1)
    panel = align([a, b], min_overlap=1, on="timestamp")
    np.testing.assert_array_equal(panel.timestamps, times[1:])
    np.testing.assert_array_equal(panel.close, np.column_stack([close[1:], close[1:] * 2]))
    assert panel.iso_timestamps()[0] == "2020-01-02T11:00:00"


# --- the panel itself --------------------------------------------------------------------


def _hand_panel() -> Panel:
    return Panel(symbols=("A", "B"), timestamps=np.array(["2020-01-02", "2020-01-03", "2020-01-06"],
                                                         dtype="datetime64[ns]"),
                 close=np.array([[100.0, 50.0], [110.0, 50.0], [99.0, 55.0]]))


def test_log_returns_and_simple_returns_hand_case() -> None:
    panel = _hand_panel()
    np.testing.assert_allclose(panel.log_returns(), [[np.log(1.1), 0.0], [np.log(0.9), np.log(1.1)]], rtol=1e-14)
    np.testing.assert_allclose(panel.simple_returns(), [[0.1, 0.0], [-0.1, 0.1]], rtol=1e-12, atol=1e-15)


def test_to_matrix_payload_structure() -> None:
    panel = _hand_panel()
    payload = panel.to_matrix_payload()
    assert set(payload) == {"columns", "timestamps", "values"}
    assert payload["columns"] == ["A", "B"]
    assert payload["timestamps"] == ["2020-01-03", "2020-01-06"]  # the return dates: dates[1:]
    assert len(payload["values"]) == 2 and all(len(row) == 2 for row in payload["values"])
    assert all(isinstance(v, float) for row in payload["values"] for v in row)
    np.testing.assert_allclose(payload["values"], panel.log_returns())
    np.testing.assert_allclose(panel.to_matrix_payload("simple")["values"], panel.simple_returns())
    assert json.loads(json.dumps(payload)) == payload
    wire = MatrixPayload.model_validate(payload)  # what the ML server's matrix families accept
    assert wire.shape == (2, 2) and wire.timestamps is not None and wire.timestamps[0].day == 3
    with pytest.raises(ValueError, match="'log' or 'simple'"):
        panel.to_matrix_payload("pct")  # type: ignore[arg-type]


def test_tail_between_and_column_select_dates() -> None:
    panel = _hand_panel()
    assert panel.tail(2).iso_timestamps() == ["2020-01-03", "2020-01-06"]
    assert len(panel.tail(10)) == 3
    assert panel.between("2020-01-03", "2020-01-03").iso_timestamps() == ["2020-01-03"]  # a bare end covers the day
    assert panel.between(None, "2020-01-05").iso_timestamps() == ["2020-01-02", "2020-01-03"]
    assert len(panel.between("2021-01-01")) == 0
    np.testing.assert_array_equal(panel.column("B"), [50.0, 50.0, 55.0])
    with pytest.raises(KeyError, match="'C' is not in the panel; symbols: A, B"):
        panel.column("C")
    with pytest.raises(ValueError, match="positive"):
        panel.tail(0)


def test_panel_refuses_bad_prices_order_and_shape() -> None:
    ts = np.array(["2020-01-02", "2020-01-03"], dtype="datetime64[ns]")
    with pytest.raises(DataError, match="B: 1 prices not positive and finite, first 0 on 2020-01-03"):
        Panel(symbols=("A", "B"), timestamps=ts, close=np.array([[1.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(DataError, match="strictly increasing"):
        Panel(symbols=("A",), timestamps=ts[::-1], close=np.ones((2, 1)))
    with pytest.raises(DataError, match="shape"):
        Panel(symbols=("A", "B"), timestamps=ts, close=np.ones((2, 1)))
    with pytest.raises(DataError, match="repeated symbols: A"):
        Panel(symbols=("A", "A"), timestamps=ts, close=np.ones((2, 2)))


def test_timestamp_range_gives_first_last_and_length() -> None:
    assert timestamp_range(np.array(["2020-01-02", "2020-03-04"], dtype="datetime64[ns]")) == (
        "2020-01-02", "2020-03-04", 2)
    assert timestamp_range(np.array(["2020-01-02T10:30", "2020-01-02T11:00"], dtype="datetime64[ns]")) == (
        "2020-01-02T10:30:00", "2020-01-02T11:00:00", 2)
    assert timestamp_range(np.array([], dtype="datetime64[ns]")) == ("", "", 0)
