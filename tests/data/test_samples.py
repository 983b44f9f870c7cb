"""The real series shipped by arch: located without importing arch, validated, cached read-only."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from quantcrew.data.errors import DataError, SampleUnavailableError, UnknownSymbolError
from quantcrew.data.samples import SAMPLES, load_sample, resolve_sample_name, sample_path
from quantcrew.data.validate import find_gaps, validate_ohlcv


@pytest.mark.parametrize("name", list(SAMPLES))
def test_load_sample_validates_and_matches_its_info(name: str) -> None:
    info = SAMPLES[name]
    bars = load_sample(name)
    assert bars.symbol == name
    assert validate_ohlcv(bars, max_gap_days=info.max_gap_days) is bars
    assert bars.iso_timestamps()[0] == info.start
    assert bars.iso_timestamps()[-1] == info.end
    assert bars.meta["sample"] == name
    assert bars.meta["source"] == str(sample_path(name))
    assert np.all(np.isfinite(bars.close)) and np.all(bars.close > 0)


@pytest.mark.parametrize("name", ["SP500", "NASDAQ", "VIX"])
def test_daily_samples_pass_default_gap_tolerance(name: str) -> None:
    bars = load_sample(name)
    assert SAMPLES[name].max_gap_days == 7
    assert validate_ohlcv(bars) is bars  # default max_gap_days=7
    gaps = np.diff(bars.timestamps).astype("timedelta64[D]").astype(int)
    assert gaps.max() <= 7


def test_sp500_covers_1999_to_2018_with_the_9_11_closure() -> None:
    bars = load_sample("SP500")
    assert len(bars) == 5031
    assert bars.iso_timestamps()[0] == "1999-01-04"
    assert bars.iso_timestamps()[-1] == "2018-12-31"
    assert bars.close[0] == pytest.approx(1228.099976)
    (gap,) = find_gaps(bars.timestamps, 6)  # the longest closure: 2001-09-10 -> 2001-09-17
    assert (str(gap.before)[:10], str(gap.after)[:10], gap.days) == ("2001-09-10", "2001-09-17", 7.0)
    assert bars.meta["close_only"] is False
    assert np.all(bars.volume > 0)


def test_crude_is_monthly_and_needs_its_own_tolerance() -> None:
    bars = load_sample("CRUDE")
    assert SAMPLES["CRUDE"].frequency == "monthly"
    assert len(bars) == 393
    with pytest.raises(DataError, match="exceeds max_gap_days=7"):
        validate_ohlcv(bars)
    assert bars.close[0] == pytest.approx(19.44)  # the WTI column, not Brent (18.58)


@pytest.mark.parametrize("name", ["VIX", "CRUDE"])
def test_close_only_samples_repeat_close(name: str) -> None:
    bars = load_sample(name)
    assert bars.meta["close_only"] is True
    for col in (bars.open, bars.high, bars.low):
        np.testing.assert_array_equal(col, bars.close)
    assert not np.any(bars.volume)


def test_vix_drops_fred_holiday_rows() -> None:
    bars = load_sample("VIX")
    dropped = bars.meta["dropped_missing"]
    assert len(dropped) == 46
    assert "2014-01-20" in dropped  # Martin Luther King day: '.' in the file
    assert "2014-01-20" not in bars.iso_timestamps()
    assert len(bars) == 1305 - 46


def test_resolve_sample_name_aliases() -> None:
    assert resolve_sample_name("s&p 500") == "SP500"
    assert resolve_sample_name("S&P500") == "SP500"
    assert resolve_sample_name("spx") == "SP500"
    assert resolve_sample_name("nasdaq") == "NASDAQ"
    assert resolve_sample_name("Crude-Oil") == "CRUDE"
    assert resolve_sample_name("AAPL") is None


def test_load_sample_arrays_are_read_only_and_cached() -> None:
    first = load_sample("SP500")
    with pytest.raises(ValueError, match="read-only"):
        first.close[0] = 1.0
    with pytest.raises(ValueError):
        first.close.setflags(write=True)
    with pytest.raises(ValueError):
        first.timestamps[0] = np.datetime64("2000-01-01")
    first.meta["note"] = "changed by a caller"
    second = load_sample("sp500")
    assert np.shares_memory(first.close, second.close)  # parsed once
    assert "note" not in second.meta
    assert second.close[0] == pytest.approx(1228.099976)


def test_load_unknown_sample_lists_names() -> None:
    with pytest.raises(UnknownSymbolError, match="SP500, NASDAQ, VIX, CRUDE"):
        load_sample("FTSE")


def test_sample_path_lies_in_arch_package() -> None:
    spec = importlib.util.find_spec("arch")
    assert spec is not None and spec.origin is not None
    path = sample_path("spx")
    assert path.is_file()
    assert path.name == "sp500.csv.gz"
    assert str(path).startswith(str(spec.origin).rsplit("/", 1)[0])


def test_missing_arch_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def _find_spec(name: str, package: str | None = None) -> object:
        return None if name == "arch" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", _find_spec)
    with pytest.raises(SampleUnavailableError, match=r"pip install 'quantcrew\[server\]', or pass a CSV") as info:
        load_sample("SP500")  # even though the parsed series is cached
    assert isinstance(info.value, DataError)


def test_loading_samples_does_not_import_arch() -> None:
    code = textwrap.dedent(
        """
        import sys
        from quantcrew.data import SAMPLES, load_sample, load_symbol
        for name in SAMPLES:
            load_sample(name)
        load_symbol("spx")
        heavy = sorted(m for m in ("arch", "pandas", "scipy") if m in sys.modules)
        print("imported:", heavy)
        assert not heavy, heavy
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "imported: []" in result.stdout
