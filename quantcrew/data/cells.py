"""Parse the cells of one column: numbers to ``float64``, dates and times to ``datetime64[ns]``.

A column arrives as text (CSV, or a Parquet string column) or as a numpy array (a typed
Parquet column). Missing cells (empty, ``NA``, ``null``, ``.``...) read as NaN / NaT. A cell
that does not parse is appended to the caller's ``bad`` list as ``(row, column, message)``
rather than raised at once, so one error can report every bad cell of a file.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from quantcrew.data.errors import DataError

__all__ = ["BadCell", "FloatArray", "TimeArray", "parse_floats", "parse_times"]

_MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "."})
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(?P<zone>Z|[+-]\d{2}:?\d{2})?")
_US = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})(?:[T ](\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_FORMATS = "ISO (2020-01-02, optionally with a time) or US month/day/year (1/4/1999)"

FloatArray = npt.NDArray[np.float64]
TimeArray = npt.NDArray[np.datetime64]
BadCell = tuple[int, str, str]
"""A cell that did not parse: (0-based data row, column as written, what is wrong)."""


def parse_floats(values: Any, path: Path, column: str, bad: list[BadCell]) -> FloatArray:
    """Floats from a column; cells that are not numbers are added to ``bad`` (missing cells read as NaN).

    Args:
        values: The column: a numpy array or a sequence of text cells.
        path: The file, for the error message.
        column: The column as written in the file.
        bad: Collects the cells that do not parse.

    Raises:
        DataError: a typed column that holds something other than numbers.
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "fiub":
            raise DataError.at(path, f"holds {values.dtype} values, not numbers", column=column)
        return np.asarray(values, dtype=np.float64)
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        pass  # empty cells, "NA", or text: go cell by cell
    out = np.empty(len(values), dtype=np.float64)
    for i, cell in enumerate(values):
        text = cell.strip()
        if text.lower() in _MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = float(text)
        except ValueError:
            out[i] = np.nan
            bad.append((i, column, f"{cell!r} is not a number"))
    return out


def parse_times(values: Any, path: Path, column: str, bad: list[BadCell]) -> TimeArray:
    """``datetime64[ns]`` from a time column; the format (ISO or US) is chosen per file.

    Args:
        values: The column: a numpy array or a sequence of text cells.
        path: The file, for the error message.
        column: The column as written in the file.
        bad: Collects the cells that do not parse (and missing times of a typed column).

    Raises:
        DataError: a typed column that holds no times, or a first date in neither format.
    """
    if isinstance(values, np.ndarray):
        if values.dtype.kind != "M":
            raise DataError.at(path, f"holds {values.dtype} values, not times or dates", column=column)
        times = values.astype("datetime64[ns]")
        bad += [(int(i), column, "time is missing") for i in np.flatnonzero(np.isnat(times))]
        return times
    strings = [v.strip() for v in values]
    first = next((s for s in strings if s), "")
    if _US.match(first):
        return _parse_us(strings, column, bad)
    if _ISO.match(first):
        return _parse_iso(strings, column, bad)
    row = strings.index(first) if first else 0
    raise DataError.at(path, f"cannot read date {first!r}: expected {_FORMATS}", row=row, column=column)


def _parse_iso(strings: list[str], column: str, bad: list[BadCell]) -> TimeArray:
    if all(len(s) == 10 and s[4] == "-" and s[7] == "-" for s in strings):
        try:  # the common case, dates only: numpy parses them in one call
            return np.array(strings, dtype="datetime64[D]").astype("datetime64[ns]")
        except ValueError:
            pass  # an impossible date such as 2020-02-30, or text: find it below
    normal: list[str] = []
    for s in strings:
        m = _ISO.fullmatch(s)
        if m is not None and m.group("zone"):  # convert to UTC, drop the zone
            try:
                s = datetime.fromisoformat(s).astimezone(UTC).replace(tzinfo=None).isoformat()
            except ValueError:
                m = None
        normal.append(s if m is not None else "")
    return _to_datetime64(normal, strings, column, "ISO dates such as 2020-01-02", bad)


def _parse_us(strings: list[str], column: str, bad: list[BadCell]) -> TimeArray:
    normal: list[str] = []
    for s in strings:
        m = _US.fullmatch(s)
        if m is None:
            normal.append("")
            continue
        month, day, year, hour, minute, second = m.groups()
        iso = f"{year}-{month:0>2}-{day:0>2}"
        if hour is not None:
            iso += f"T{hour:0>2}:{minute}:{second or '00'}"
        normal.append(iso)
    return _to_datetime64(normal, strings, column, "month/day/year dates such as 1/4/1999", bad)


def _to_datetime64(normal: list[str], strings: list[str], column: str, expected: str, bad: list[BadCell]) -> TimeArray:
    """Parse normalised ISO strings ("" where the text was not recognised) in one numpy call."""
    if all(normal):
        try:
            return np.array(normal, dtype="datetime64[ns]")
        except ValueError:
            pass  # a well-formed but impossible date (2/30/2020): find which
    out = np.full(len(normal), np.datetime64("NaT"), dtype="datetime64[ns]")
    for i, text in enumerate(normal):
        try:
            if text:
                out[i] = np.datetime64(text, "ns")
                continue
        except ValueError:
            pass
        bad.append((i, column, f"cannot read date {strings[i]!r}: this file uses {expected}"))
    return out
