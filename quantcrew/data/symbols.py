"""Resolve a symbol to bars: a file in the data folder, a bundled sample, or a file path.

This sits above both :mod:`quantcrew.data.loaders` (files) and :mod:`quantcrew.data.samples`
(the bundled series, themselves read with the loaders), so neither imports the other back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantcrew.data.errors import DataError, SampleUnavailableError, UnknownSymbolError
from quantcrew.data.loaders import SUFFIXES, load_file
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.samples import SAMPLES, load_sample, resolve_sample_name

__all__ = ["load_symbol"]


def load_symbol(
    symbol: str,
    *,
    data_dir: str | Path | None = None,
    max_gap_days: int | None = 7,
    validate: bool = True,
) -> OHLCV:
    """Bars for a symbol, looked up in this order.

    1. ``<data_dir>/<symbol>.csv``, ``.csv.gz``, ``.parquet`` or ``.pq`` (file name matched
       case-insensitively); for a bundled sample's name or alias also ``<data_dir>/<SAMPLE>.*``
       (``spx`` finds ``SP500.csv``). The data folder comes first so that bars appended to a
       bundled series (``quantcrew data add``) are the ones read; such a file is named after the
       sample and checked against the larger of ``max_gap_days`` and the sample's own tolerance.
    2. A bundled sample (``SP500`` / ``S&P500`` / ``SPX``, ``NASDAQ``, ``VIX``, ``CRUDE``;
       any case). Samples are checked against their own gap tolerance (CRUDE is monthly),
       not ``max_gap_days``.
    3. ``symbol`` as the path of an existing file.

    Args:
        symbol: A sample name, a file stem in ``data_dir``, or a file path.
        data_dir: Folder of data files (``Settings.data.data_dir``); None skips step 1.
        max_gap_days: Gap tolerance for files (None: no gap check).
        validate: Validate bars read from files.

    Raises:
        UnknownSymbolError: nothing matched; the message lists the samples and the files in ``data_dir``.
        DataError: a match was found but could not be loaded.
    """
    sample_name = resolve_sample_name(symbol)
    options: dict[str, Any] = dict(validate=validate, max_gap_days=max_gap_days)
    folder = None if data_dir is None else Path(data_dir)
    if folder is not None:
        found = _find_in_dir(folder, symbol)
        if found is None and sample_name is not None:
            found = _find_in_dir(folder, sample_name)
        if found is not None:
            if sample_name is not None:
                own = SAMPLES[sample_name].max_gap_days
                gap = None if max_gap_days is None else max(max_gap_days, own)
                options.update(symbol=sample_name, max_gap_days=gap)
            return load_file(found, **options)
    sample_error: DataError | None = None
    if sample_name is not None:
        try:
            return load_sample(sample_name)
        except SampleUnavailableError as exc:
            sample_error = exc  # arch is not installed: the symbol may still be a file path
    as_path = Path(symbol).expanduser()
    if as_path.is_file():
        return load_file(as_path, **options)
    if sample_error is not None:
        raise sample_error
    files = sorted(p.name for p in _data_files(folder)) if folder is not None else []
    hint = "not a file path either" if folder is not None else "no data_dir given, and not a file path"
    raise UnknownSymbolError(symbol, samples=list(SAMPLES), files=files, data_dir=folder, hint=hint)


def _data_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(SUFFIXES)]


def _find_in_dir(folder: Path, symbol: str) -> Path | None:
    """``<folder>/<symbol><suffix>``, matching the name case-insensitively; plain names only."""
    if not symbol or Path(symbol).name != symbol or symbol in {".", ".."}:
        return None  # a path, not a name: never look outside data_dir
    by_name = {p.name.lower(): p for p in _data_files(folder)}
    for suffix in SUFFIXES:
        hit = by_name.get(symbol.lower() + suffix)
        if hit is not None:
            return hit
    return None
