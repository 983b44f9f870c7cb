"""Load OHLCV bars from CSV (plain or gzipped) and Parquet files.

Numpy, the standard ``csv`` module and (for Parquet, imported when used) pyarrow: no pandas.

Column names are matched case-insensitively. The time column may be called ``Date``,
``Datetime``, ``Timestamp`` or ``Time`` (a separate ``Date`` + ``Time`` pair is joined);
``Open``, ``High``, ``Low`` and ``Close`` are required; ``Volume`` is optional (zeros when
absent); any other column (``Adj Close``...) is ignored. A close-only series (one price
per bar) is read with ``price_column=...``: open, high and low then repeat the close.

Dates are ISO-8601 (``2020-01-02``, ``2020-01-02 09:30:00``, ``2020-01-02T09:30:00Z``;
times with an offset are converted to UTC) or US ``month/day/year`` (``1/4/1999``), detected
per file. Empty cells and ``NA``/``null``/``.`` read as NaN, which validation then reports.
Rows keep the file's order: unsorted input fails validation unless ``sort=True``.
Rows in error messages are 0-based data rows (the first line under the header is row 0).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from quantcrew.data.cells import BadCell, FloatArray, parse_floats, parse_times
from quantcrew.data.errors import MAX_PROBLEMS, DataError, format_problem
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.validate import validate_ohlcv

__all__ = ["SUFFIXES", "bars_hash", "load_csv", "load_file", "load_parquet", "payload_hash", "to_payload_dict"]

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
"""File endings :func:`load_file` understands, in the order
:func:`~quantcrew.data.symbols.load_symbol` tries them."""

_TIME_NAMES = ("datetime", "timestamp", "date", "time")
_PRICES = ("open", "high", "low", "close")


def load_csv(
    path: str | Path,
    *,
    symbol: str | None = None,
    validate: bool = True,
    max_gap_days: int | None = 7,
    sort: bool = False,
    price_column: str | None = None,
) -> OHLCV:
    """Read bars from a CSV file (``.csv`` or gzipped ``.csv.gz``) with a header row.

    Args:
        path: The file.
        symbol: Name for the series; defaults to the file name without its suffixes.
        validate: Run :func:`~quantcrew.data.validate.validate_ohlcv` on the result.
        max_gap_days: Longest allowed calendar-day gap between bars (None: no gap check).
        sort: Sort rows by time instead of reporting unsorted input as an error.
        price_column: Read a close-only series from this column: open, high and low repeat
            it and ``meta["close_only"]`` is True.

    Returns:
        The bars, with ``meta`` naming the source file.

    Raises:
        DataError: the file is missing, empty, lacks a required column, holds a value that
            does not parse (row and column named), or fails validation.
    """
    path = Path(path)
    _require_file(path)
    header, rows = _read_csv(path)
    columns: list[Sequence[str]] = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    table = dict(zip(header, columns, strict=True))
    return _build(table, path, "csv", symbol=symbol, validate=validate, max_gap_days=max_gap_days, sort=sort,
                  price_column=price_column)


def load_parquet(
    path: str | Path,
    *,
    symbol: str | None = None,
    validate: bool = True,
    max_gap_days: int | None = 7,
    sort: bool = False,
    price_column: str | None = None,
) -> OHLCV:
    """Read bars from a Parquet file, with the same columns and contract as :func:`load_csv`.

    The time column may be a timestamp (converted to UTC when it carries a zone), a date,
    or text in one of the CSV formats; price columns may be any numeric type or text.

    Raises:
        DataError: as :func:`load_csv`, and for a file pyarrow cannot read.
    """
    import pyarrow as pa  # imported here: only Parquet users pay for it
    import pyarrow.parquet as pq

    path = Path(path)
    _require_file(path)
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"not a readable Parquet file ({exc})") from exc
    table: dict[str, Any] = {}
    for name in arrow.column_names:
        if name.startswith("__index_level_"):
            continue
        table[name] = _arrow_column(arrow.column(name), path, name)
    return _build(table, path, "parquet", symbol=symbol, validate=validate, max_gap_days=max_gap_days, sort=sort,
                  price_column=price_column)


def load_file(
    path: str | Path,
    *,
    symbol: str | None = None,
    validate: bool = True,
    max_gap_days: int | None = 7,
    sort: bool = False,
    price_column: str | None = None,
) -> OHLCV:
    """Read bars from a file, choosing the reader by suffix (``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``).

    Raises:
        DataError: the file is missing, its suffix is not one of those, or the reader refuses it.
    """
    path = Path(path)
    _require_file(path)
    name = path.name.lower()
    options: dict[str, Any] = dict(symbol=symbol, validate=validate, max_gap_days=max_gap_days, sort=sort,
                                   price_column=price_column)
    if name.endswith((".csv", ".csv.gz")):
        return load_csv(path, **options)
    if name.endswith((".parquet", ".pq")):
        return load_parquet(path, **options)
    raise DataError(path, f"unsupported file type; expected one of {', '.join(SUFFIXES)}")


def to_payload_dict(bars: OHLCV) -> dict[str, Any]:
    """The JSON-ready dict for ``quantcrew.ml_server.schemas.common.OHLCVPayload``.

    Timestamps become ISO strings, columns lists of floats; ``volume`` is left out when it
    is all zeros (unknown).
    """
    payload: dict[str, Any] = {
        "timestamps": bars.iso_timestamps(),
        "open": bars.open.tolist(),
        "high": bars.high.tolist(),
        "low": bars.low.tolist(),
        "close": bars.close.tolist(),
    }
    if bars.volume.size and np.any(bars.volume != 0.0):
        payload["volume"] = bars.volume.tolist()
    return payload


def bars_hash(times_us: npt.NDArray[np.datetime64], columns: Sequence[npt.NDArray[np.float64]]) -> str:
    """``sha256:<hex>`` of bar timestamps (``datetime64[us]``, naive UTC) and float64 columns.

    The one definition of a data hash: the server hashes every request's bars with it (recorded
    with each model), and the client hashes its own bars the same way to recognise what a model
    was trained on.
    """
    digest = hashlib.sha256(np.ascontiguousarray(times_us.astype("datetime64[us]")).view(np.int64).tobytes())
    for column in columns:
        digest.update(np.ascontiguousarray(column, dtype=np.float64).tobytes())
    return "sha256:" + digest.hexdigest()


def payload_hash(bars: OHLCV) -> str:
    """The data hash the ML server records for ``to_payload_dict(bars)`` (volume only when sent)."""
    columns = [bars.open, bars.high, bars.low, bars.close]
    if bars.volume.size and np.any(bars.volume != 0.0):
        columns.append(bars.volume)
    return bars_hash(bars.timestamps.astype("datetime64[us]"), columns)


# --- reading -----------------------------------------------------------------------------


def _require_file(path: Path) -> None:
    if not path.exists():
        raise DataError(path, "no such file")
    if not path.is_file():
        raise DataError(path, "not a file")


def _open_text(path: Path) -> IO[str]:
    # utf-8-sig drops a byte-order mark (the arch crude file has one); newline="" is what csv wants.
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with _open_text(path) as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, EOFError, csv.Error) as exc:
        raise DataError(path, f"cannot read the file as text CSV ({exc})") from exc
    start = next((i for i, r in enumerate(rows) if any(r)), None)
    if start is None:
        raise DataError(path, "the file is empty: expected a header row (Date,Open,High,Low,Close[,Volume])")
    header = [h.strip() for h in rows[start]]
    rows = rows[start + 1 :]
    width = len(header)
    if any(len(r) != width for r in rows):
        rows = [r for r in rows if any(r)]  # blank lines are not rows
        bad = [i for i, r in enumerate(rows) if len(r) != width]
        if bad:
            raise DataError(
                path,
                [format_problem(f"has {len(rows[i])} fields but the header has {width}", row=i)
                 for i in bad[:MAX_PROBLEMS]],
                row=bad[0],
                n_problems=len(bad),
            )
    return header, rows


def _arrow_column(column: Any, path: Path, name: str) -> Any:
    """An Arrow column as numpy: datetime64 for times, float64 for numbers, list[str] for text."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type
    if pa.types.is_timestamp(kind):
        if kind.tz is not None:  # stored as UTC instants: drop the zone, keep UTC
            column = column.cast(pa.timestamp(kind.unit))
        return column.to_numpy().astype("datetime64[ns]")
    if pa.types.is_date(kind):
        return column.cast(pa.timestamp("ns")).to_numpy()
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return column.cast(pa.float64()).to_numpy()
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return ["" if v is None else v for v in pc.cast(column, pa.string()).to_pylist()]
    return _Unsupported(str(kind))


class _Unsupported:
    """Marks a Parquet column whose type cannot hold prices or times."""

    def __init__(self, kind: str) -> None:
        self.kind = kind


# --- building ----------------------------------------------------------------------------


def _build(
    raw: dict[str, Any],
    path: Path,
    fmt: str,
    *,
    symbol: str | None,
    validate: bool,
    max_gap_days: int | None,
    sort: bool,
    price_column: str | None,
) -> OHLCV:
    names = _index_columns(raw, path)
    time_key, time_values = _time_column(raw, names, path)
    wanted = _wanted_columns(names, path, price_column)
    n = len(time_values)
    if n == 0:
        raise DataError(path, "no data rows under the header")

    bad: list[BadCell] = []  # every cell that does not parse, dates and numbers alike
    timestamps = parse_times(time_values, path, time_key, bad)
    numbers: dict[str, FloatArray] = {}
    for canon, original in wanted.items():
        numbers[canon] = parse_floats(raw[original], path, original, bad)
    if bad:
        bad.sort(key=lambda cell: cell[0])
        lines = [format_problem(msg, row=row, column=col) for row, col, msg in bad[:MAX_PROBLEMS]]
        raise DataError(path, lines, row=bad[0][0], column=bad[0][1], n_problems=len(bad))

    meta: dict[str, Any] = {"source": str(path), "format": fmt, "time_column": time_key}
    if price_column is not None:
        close = numbers["close"]
        o, h, lo, c = close.copy(), close.copy(), close.copy(), close
        meta["close_only"] = True
        meta["price_column"] = wanted["close"]
    else:
        o, h, lo, c = (numbers[k] for k in _PRICES)
    if "volume" in numbers:
        vol = numbers["volume"]
    else:
        vol = np.zeros(n, dtype=np.float64)
        meta["volume"] = "absent (zeros)"
    if sort:
        order = np.argsort(timestamps, kind="stable")
        if np.any(order != np.arange(n)):
            timestamps = timestamps[order]
            o, h, lo, c, vol = (a[order] for a in (o, h, lo, c, vol))
            meta["sorted"] = True
    bars = OHLCV(
        symbol=symbol if symbol is not None else _stem(path),
        timestamps=timestamps,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=vol,
        meta=meta,
    )
    if validate:
        validate_ohlcv(bars, max_gap_days=max_gap_days, source=str(path))
    return bars


def _index_columns(raw: dict[str, Any], path: Path) -> dict[str, str]:
    """Lower-case name -> name as written; two columns with the same name are an error."""
    names: dict[str, str] = {}
    for original in raw:
        key = original.strip().lower()
        if key in names:
            raise DataError.at(path, f"appears twice (also as {names[key]!r})", column=original)
        names[key] = original
    for original, values in raw.items():
        if isinstance(values, _Unsupported) and original.strip().lower() in {*_TIME_NAMES, *_PRICES, "volume"}:
            raise DataError.at(path, f"has Parquet type {values.kind}, which holds neither numbers nor times",
                               column=original)
    return names


def _time_column(raw: dict[str, Any], names: dict[str, str], path: Path) -> tuple[str, Any]:
    if "date" in names and "time" in names and "datetime" not in names and "timestamp" not in names:
        d, t = raw[names["date"]], raw[names["time"]]
        if not isinstance(d, np.ndarray) and not isinstance(t, np.ndarray):
            return f"{names['date']} {names['time']}", [f"{a.strip()} {b.strip()}" for a, b in zip(d, t, strict=True)]
    for key in _TIME_NAMES:
        if key in names:
            return names[key], raw[names[key]]
    first = next(iter(raw), None)
    if first is not None and not first.strip():  # an unnamed first column: an index written with the data
        return first, raw[first]                   # (pandas' to_csv); it must parse as times like any other
    raise DataError(path, f"no time column: expected one named Date, Datetime, Timestamp or Time, or an "
                          f"unnamed first column; columns found: {_listing(raw)}")


def _wanted_columns(names: dict[str, str], path: Path, price_column: str | None) -> dict[str, str]:
    """Canonical name -> column as written, for the numeric columns to read."""
    if price_column is not None:
        key = price_column.strip().lower()
        if key not in names:
            raise DataError(path, f"missing price column {price_column!r}; columns found: {_listing(names.values())}")
        wanted = {"close": names[key]}
    else:
        missing = [k.capitalize() for k in _PRICES if k not in names]
        if missing:
            hint = ""
            if len(missing) >= 3:
                hint = " (for a close-only series pass price_column=<its column>)"
            raise DataError(
                path,
                f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                f"columns found: {_listing(names.values())}{hint}",
                column=missing[0],
            )
        wanted = {k: names[k] for k in _PRICES}
    if "volume" in names:
        wanted["volume"] = names["volume"]
    return wanted


def _listing(columns: Any) -> str:
    return ", ".join(repr(c) for c in columns) or "none"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name or path.name
