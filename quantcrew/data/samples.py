"""Real market series bundled with the ``arch`` package, read without importing ``arch``.

``arch`` ships small gzipped CSVs under ``arch/data/``. They are located with
``importlib.util.find_spec("arch")``, which finds the top-level package without running it
(asking for ``arch.data.sp500`` would import ``arch``, and with it scipy and pandas).

The files differ: SP500 and NASDAQ carry full daily OHLC + volume; VIX is a daily close
only (FRED style: market holidays are listed with ``.`` as the value; those rows are dropped
and listed in ``meta["dropped_missing"]``); CRUDE is a monthly close only (mid-month WTI; the
file also holds Brent). For a close-only series open, high and low repeat the close, and
``meta["close_only"]`` says so.
Each sample is validated against its own gap tolerance (7 days for the daily series, 31
for the monthly crude series).

Parsed samples are cached; their arrays are read-only, so copy before changing them.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantcrew.data.errors import SampleUnavailableError, UnknownSymbolError
from quantcrew.data.loaders import load_csv
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.validate import validate_ohlcv

__all__ = ["SAMPLES", "SampleInfo", "load_sample", "resolve_sample_name", "sample_path"]


@dataclass(frozen=True)
class SampleInfo:
    """A bundled series.

    Attributes:
        name: Canonical upper-case name (``"SP500"``), also the loaded series' symbol.
        relative_path: The file inside the ``arch`` package folder.
        description: What the series is.
        start: First date in the file (ISO).
        end: Last date in the file (ISO).
        frequency: ``"daily"`` or ``"monthly"``.
        price_column: For a close-only file, the column read as close; None for full OHLC.
        max_gap_days: Gap tolerance the sample is validated with.
        aliases: Other accepted names (matched ignoring case, spaces, ``-``, ``_``, ``^``).
    """

    name: str
    relative_path: str
    description: str
    start: str
    end: str
    frequency: str = "daily"
    price_column: str | None = None
    max_gap_days: int = 7
    aliases: tuple[str, ...] = ()


SAMPLES: dict[str, SampleInfo] = {
    "SP500": SampleInfo(
        name="SP500",
        relative_path="data/sp500/sp500.csv.gz",
        description="S&P 500 index, daily OHLC and volume",
        start="1999-01-04",
        end="2018-12-31",
        aliases=("S&P500", "S&P 500", "SPX", "GSPC"),
    ),
    "NASDAQ": SampleInfo(
        name="NASDAQ",
        relative_path="data/nasdaq/nasdaq.csv.gz",
        description="NASDAQ Composite index, daily OHLC and volume",
        start="1999-01-04",
        end="2018-12-31",
        aliases=("IXIC", "NASDAQ COMPOSITE"),
    ),
    "VIX": SampleInfo(
        name="VIX",
        relative_path="data/vix/vix.csv.gz",
        description="CBOE VIX volatility index, daily close only",
        start="2014-01-03",
        end="2019-01-03",
        price_column="vix",
    ),
    "CRUDE": SampleInfo(
        name="CRUDE",
        relative_path="data/crude/crude.csv.gz",
        description="WTI crude oil spot price, monthly (mid-month) close only",
        start="1987-05-15",
        end="2020-01-15",
        frequency="monthly",
        price_column="WTI",
        max_gap_days=31,
        aliases=("WTI", "OIL", "CRUDE OIL"),
    ),
}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-^]", "", name).upper()


_BY_KEY: dict[str, str] = {
    _key(alias): info.name for info in SAMPLES.values() for alias in (info.name, *info.aliases)
}


def resolve_sample_name(name: str) -> str | None:
    """The canonical sample name for ``name`` or one of its aliases (any case), else None."""
    return _BY_KEY.get(_key(name))


def sample_path(name: str) -> Path:
    """Where a sample's file lies inside the installed ``arch`` package.

    Raises:
        UnknownSymbolError: ``name`` is not a sample.
        SampleUnavailableError: ``arch`` is not installed, or lacks this file.
    """
    info = _info(name)
    root = _arch_root()
    path = root / info.relative_path
    if not path.is_file():
        raise SampleUnavailableError(
            info.name, f"sample file {path} is missing from the installed arch package; upgrade arch "
            "(pip install 'quantcrew[server]') or pass a CSV file",
        )
    return path


def load_sample(name: str) -> OHLCV:
    """Load and validate a bundled sample.

    Args:
        name: A sample name or alias (``"SP500"``, ``"spx"``, ``"VIX"``...).

    Returns:
        Bars with ``symbol`` set to the canonical name and ``meta`` naming the source file;
        the arrays are read-only views of a cached copy.

    Raises:
        UnknownSymbolError: ``name`` is not a sample.
        SampleUnavailableError: ``arch`` is not installed.
        DataError: the file does not parse or validate.
    """
    info = _info(name)
    cached = _load_cached(info.name, str(sample_path(info.name)))
    # Views of read-only arrays cannot be made writeable again; the meta dict is a fresh copy.
    return cached.iloc(slice(None))


@functools.lru_cache(maxsize=len(SAMPLES))
def _load_cached(name: str, path: str) -> OHLCV:
    info = SAMPLES[name]
    bars = load_csv(path, symbol=name, validate=False, price_column=info.price_column)
    bars = _drop_missing_closes(bars)
    validate_ohlcv(bars, max_gap_days=info.max_gap_days, source=path)
    for array in (bars.timestamps, *bars.columns.values()):
        array.setflags(write=False)
    bars.meta.update(
        sample=name, description=info.description, frequency=info.frequency,
        close_only=info.price_column is not None,
    )
    return bars


def _drop_missing_closes(bars: OHLCV) -> OHLCV:
    """Drop the days a close-only FRED-style file marks ``.`` (market holidays in the VIX file)."""
    missing = np.isnan(bars.close)
    if not bars.meta.get("close_only") or not missing.any():
        return bars
    keep = ~missing
    meta = dict(bars.meta, dropped_missing=[str(d) for d in bars.timestamps[missing].astype("datetime64[D]")])
    return OHLCV(
        symbol=bars.symbol,
        timestamps=bars.timestamps[keep],
        open=bars.open[keep],
        high=bars.high[keep],
        low=bars.low[keep],
        close=bars.close[keep],
        volume=bars.volume[keep],
        meta=meta,
    )


def _info(name: str) -> SampleInfo:
    canonical = resolve_sample_name(name)
    if canonical is None:
        raise UnknownSymbolError(name, samples=list(SAMPLES))
    return SAMPLES[canonical]


def _arch_root() -> Path:
    # find_spec on the top-level name locates the package without importing it.
    try:
        spec = importlib.util.find_spec("arch")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if spec is None or not locations:
        raise SampleUnavailableError(
            "arch", "the bundled samples come from the 'arch' package, which is not installed: "
            "pip install 'quantcrew[server]', or pass a CSV/Parquet file instead",
        )
    return Path(locations[0])
