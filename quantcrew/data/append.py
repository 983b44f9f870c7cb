"""Append new bars to a symbol's series in the data folder: validated, overlap-checked, written atomically.

A symbol's stored bars are, in the order :func:`~quantcrew.data.symbols.load_symbol` reads them:
its file in the data folder (``<data_dir>/<SYMBOL>.csv`` and the other data suffixes, matched
case-insensitively, also under a sample's canonical name), else the bundled sample of that name,
else nothing (a new series). New bars come from a CSV or Parquet file read and validated like
any data file.

The rules (append-only):

* a new bar dated before the first stored bar is refused;
* a new bar inside the stored span must fall on a stored timestamp (no inserted bars) and agree
  with it: open, high, low and close within a relative tolerance (``rtol``, 1e-6). Volume is
  not compared (vendors revise volumes and report them differently); the stored bar is kept
  whole, volume included, and the bars whose volume differs are counted;
* a gap longer than the gap tolerance between the last stored bar and the first new one, or
  between two new bars, is named and refused unless ``allow_gap``;
* a close-only stored series (open, high and low repeat the close: the VIX and crude samples)
  keeps that shape: the new bars keep their close only, and only closes are compared; a
  close-only file is refused for a series with full OHLC bars.

The merged series is written to the data folder as the symbol's file (an existing data-folder
file is rewritten in place, in its own format; otherwise ``<data_dir>/<SYMBOL>.csv``, with a
bundled sample stored under its canonical name). The file is written to a temporary folder
inside the data folder, read back and compared bar for bar, then moved over the old file with
:func:`os.replace`: a failure at any step leaves the old file as it was.
"""

from __future__ import annotations

import csv
import gzip
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import numpy.typing as npt

from quantcrew.data.errors import DataError, SampleUnavailableError
from quantcrew.data.loaders import SUFFIXES, load_file
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.samples import SAMPLES, load_sample, resolve_sample_name
from quantcrew.data.validate import Gap, find_gaps, validate_ohlcv

__all__ = [
    "RTOL",
    "AppendError",
    "AppendPlan",
    "GapRefused",
    "OverlapDisagreement",
    "StoredSeries",
    "append_bars",
    "plan_append",
    "stored_series",
    "write_bars",
]

RTOL = 1e-6
"""Relative tolerance within which an overlapping bar's prices must agree with the stored ones."""

_PRICES = ("close", "open", "high", "low")  # the order they are checked and reported in
_CSV_HEADER = ("Date", "Open", "High", "Low", "Close", "Volume")
_CSV_COLUMNS = ("open", "high", "low", "close", "volume")

Base = Literal["data_folder", "bundled", "new"]


class AppendError(DataError):
    """New bars that cannot be appended; ``reason`` says which rule refused them.

    Reasons: ``bad_symbol``, ``before_start``, ``inserted``, ``disagree``, ``gap``, ``close_only``.
    """

    def __init__(self, source: str | Path | None, problems: str | list[str], *, reason: str,
                 row: int | None = None, column: str | None = None, n_problems: int | None = None) -> None:
        self.reason = reason
        super().__init__(source, problems, row=row, column=column, n_problems=n_problems)


class OverlapDisagreement(AppendError):
    """An overlapping bar whose price differs from the stored one by more than the tolerance.

    Attributes:
        date: The first disagreeing bar's timestamp (ISO).
        column: Its first disagreeing column (``close``, ``open``, ``high`` or ``low``).
        stored: The stored value.
        new: The value in the new file.
        n_disagree: How many overlapping bars disagree in all.
    """

    def __init__(self, source: str | Path, *, row: int, date: str, column: str, stored: float, new: float,
                 n_disagree: int, n_overlap: int, rtol: float) -> None:
        self.date, self.stored, self.new, self.n_disagree = date, stored, new, n_disagree
        rel = abs(new - stored) / max(abs(stored), abs(new))
        message = (f"{date}: {column} {new!r} disagrees with the stored {stored!r} (relative difference "
                   f"{rel:.3g} > {rtol:g}); {n_disagree} of {n_overlap} overlapping bars disagree")
        super().__init__(source, message, reason="disagree", row=row, column=column)


class GapRefused(AppendError):
    """Gaps longer than the tolerance where the new bars join or run; ``gaps`` lists them."""

    def __init__(self, source: str | Path, gaps: list[Gap], max_gap_days: float) -> None:
        self.gaps = gaps
        lines = [f"gap of {g.days:g} days between {_day(g.before)} and {_day(g.after)} exceeds max_gap_days="
                 f"{max_gap_days:g} (pass --allow-gap to append anyway)" for g in gaps]
        super().__init__(source, lines, reason="gap")


@dataclass(frozen=True)
class StoredSeries:
    """A symbol's current bars and where they come from.

    Attributes:
        name: The name the series is stored under (a sample's canonical name, a file's stem, the symbol).
        base: ``data_folder``, ``bundled`` or ``new``.
        bars: The stored bars (None for a new series).
        source: The file they were read from (None for a new series).
        target: The data-folder file the merged series is written to.
        max_gap_days: The gap tolerance for this series (a sample's own when larger).
    """

    name: str
    base: Base
    bars: OHLCV | None
    source: Path | None
    target: Path
    max_gap_days: float | None


@dataclass(frozen=True)
class AppendPlan:
    """What appending a file does to a symbol, before (or after) it is written.

    Attributes:
        stored: The symbol's series before the append.
        input: The file of new bars.
        merged: The series after the append (the stored bars, then the added ones).
        n_input: Bars in the file.
        n_overlap: Bars of the file on stored timestamps, all checked and agreeing.
        overlap: First and last overlapping timestamp (ISO), or None.
        checked: The columns compared on the overlap.
        volume_differs: Overlapping bars whose volume differs (the stored volume is kept).
        added: First and last added timestamp (ISO), or None when nothing is new.
        gaps: Gaps over the tolerance where the new bars join or run (allowed, or there would be an error).
        notes: Plain sentences about choices made (close-only series, gaps allowed).
        written: Whether the merged series was written.
    """

    stored: StoredSeries
    input: Path
    merged: OHLCV
    n_input: int
    n_overlap: int
    overlap: tuple[str, str] | None
    checked: tuple[str, ...]
    volume_differs: int
    added: tuple[str, str] | None
    gaps: list[Gap] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: bool = False

    @property
    def n_added(self) -> int:
        """Bars the append adds."""
        return len(self.merged) - (0 if self.stored.bars is None else len(self.stored.bars))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (no bar arrays)."""
        before = self.stored.bars
        merged = self.merged
        return {
            "symbol": self.stored.name,
            "file": str(self.stored.target),
            "input": str(self.input),
            "stored": {
                "base": self.stored.base,
                "source": None if self.stored.source is None else str(self.stored.source),
                "bars": 0 if before is None else len(before),
                "start": None if before is None else _day(before.timestamps[0]),
                "end": None if before is None else _day(before.timestamps[-1]),
            },
            "bars_in_file": self.n_input,
            "overlap": {
                "bars": self.n_overlap,
                "start": None if self.overlap is None else self.overlap[0],
                "end": None if self.overlap is None else self.overlap[1],
                "checked": list(self.checked),
                "rtol": RTOL,
                "volume_differs": self.volume_differs,
            },
            "added": {
                "bars": self.n_added,
                "start": None if self.added is None else self.added[0],
                "end": None if self.added is None else self.added[1],
            },
            "span": {"bars": len(merged), "start": _day(merged.timestamps[0]), "end": _day(merged.timestamps[-1])},
            "max_gap_days": self.stored.max_gap_days,
            "gaps": [{"before": _day(g.before), "after": _day(g.after), "days": g.days} for g in self.gaps],
            "notes": list(self.notes),
            "written": self.written,
        }


def stored_series(symbol: str, *, data_dir: str | Path, max_gap_days: int | None = 7) -> StoredSeries:
    """The symbol's current bars, looked up as :func:`~quantcrew.data.symbols.load_symbol` does with a data folder.

    The data-folder file wins over the bundled sample (it is the series a previous append wrote).

    Args:
        symbol: A sample name or alias, or a plain name (no folder, no file suffix).
        data_dir: The data folder.
        max_gap_days: The gap tolerance for files (a sample's own tolerance is used when larger).

    Raises:
        AppendError: ``symbol`` is a path or ends in a data suffix (reason ``bad_symbol``).
        DataError: the stored file does not load or validate.
    """
    _check_name(symbol)
    folder = Path(data_dir).expanduser()
    sample = resolve_sample_name(symbol)
    limit: float | None = max_gap_days
    if sample is not None and max_gap_days is not None:
        limit = max(max_gap_days, SAMPLES[sample].max_gap_days)
    found = _find_in_dir(folder, symbol) or (_find_in_dir(folder, sample) if sample is not None else None)
    if found is not None:
        name = sample if sample is not None else _stem(found)
        # earlier appends may have been allowed a gap: only the new bars are held to the tolerance
        bars = load_file(found, symbol=name, max_gap_days=None)
        return StoredSeries(name, "data_folder", bars, found, found, limit)
    if sample is not None:
        try:
            bundled = load_sample(sample)
        except SampleUnavailableError:  # no arch: the symbol starts as a new data-folder file of that name
            return StoredSeries(sample, "new", None, None, folder / f"{sample}.csv", limit)
        return StoredSeries(sample, "bundled", bundled, Path(str(bundled.meta["source"])), folder / f"{sample}.csv",
                            limit)
    return StoredSeries(symbol, "new", None, None, folder / f"{symbol}.csv", limit)


def plan_append(
    symbol: str,
    path: str | Path,
    *,
    data_dir: str | Path,
    max_gap_days: int | None = 7,
    allow_gap: bool = False,
    price_column: str | None = None,
    rtol: float = RTOL,
) -> AppendPlan:
    """Check the bars of ``path`` against the symbol's stored series and build the merged series; write nothing.

    Args:
        symbol: The symbol (see :func:`stored_series`).
        path: A CSV (``.csv``, ``.csv.gz``) or Parquet (``.parquet``, ``.pq``) file of bars.
        data_dir: The data folder.
        max_gap_days: Gap tolerance (None: gaps are not checked).
        allow_gap: Append across gaps longer than the tolerance (they are still named in the plan).
        price_column: Read a close-only file from this column.
        rtol: Relative tolerance for overlapping prices.

    Raises:
        DataError: the file is missing, unreadable, lacks a column, or fails validation (file, row
            and column named), or the stored series does not load.
        AppendError: the rules refuse the bars (:class:`OverlapDisagreement`, :class:`GapRefused`, ...).
    """
    stored = stored_series(symbol, data_dir=data_dir, max_gap_days=max_gap_days)
    source = Path(path).expanduser()
    new = load_file(source, symbol=stored.name, max_gap_days=None, price_column=price_column)  # gaps: judged below
    notes: list[str] = []
    old = stored.bars
    close_only_old = old is not None and _is_close_only(old)
    if old is not None and not close_only_old and price_column is not None:
        raise AppendError(source, f"the file holds closes only, but {stored.name} has full OHLC bars: give a file "
                                  "with Open, High, Low and Close", reason="close_only")
    if close_only_old:
        c = new.close
        new = OHLCV(symbol=stored.name, timestamps=new.timestamps, open=c.copy(), high=c.copy(), low=c.copy(), close=c,
                    volume=np.zeros_like(c), meta=dict(new.meta))
        notes.append(f"{stored.name} is a close-only series: the new bars keep their close only")

    ts_new = new.timestamps.astype("datetime64[ns]")
    if old is None:
        first_added = 0
        n_overlap, overlap, volume_differs = 0, None, 0
        checked: tuple[str, ...] = ()
    else:
        ts_old = old.timestamps.astype("datetime64[ns]")
        first_added = int(np.searchsorted(ts_new, ts_old[-1], side="right"))
        if ts_new[0] < ts_old[0]:
            raise AppendError(source, f"{_day(ts_new[0])} is before the first stored bar of {stored.name} "
                                      f"({_day(ts_old[0])}): only appending after {_day(ts_old[-1])} is supported",
                              reason="before_start", row=0, column=str(new.meta.get("time_column", "Date")))
        inside = ts_new[:first_added]
        at = np.searchsorted(ts_old, inside)
        missing = np.flatnonzero(ts_old[np.minimum(at, len(ts_old) - 1)] != inside)
        if missing.size:
            i = int(missing[0])
            raise AppendError(source, f"{_day(inside[i])} is inside the stored span of {stored.name} "
                                      f"({_day(ts_old[0])} to {_day(ts_old[-1])}) but is not a stored bar: only "
                                      f"appending after {_day(ts_old[-1])} is supported ({missing.size} such bars)",
                              reason="inserted", row=i, column=str(new.meta.get("time_column", "Date")))
        checked = ("close",) if close_only_old else _PRICES
        n_overlap = first_added
        overlap = (_day(inside[0]), _day(inside[-1])) if n_overlap else None
        _check_overlap(source, old, new, at, n_overlap, checked, rtol)
        volume_differs = int(np.count_nonzero(old.volume[at] != new.volume[:n_overlap])) if n_overlap else 0

    added = new.iloc(slice(first_added, None))
    limit = stored.max_gap_days
    gaps: list[Gap] = []
    if len(added) and limit is not None:
        joined = added.timestamps if old is None else np.concatenate([old.timestamps[-1:], added.timestamps])
        gaps = find_gaps(joined, limit)
        if gaps and not allow_gap:
            raise GapRefused(source, gaps, limit)
        if gaps:
            longest = max(g.days for g in gaps)
            notes.append(f"appended across {len(gaps)} gap(s) over max_gap_days={limit:g}: loading {stored.name} "
                         f"needs data.max_gap_days >= {int(np.ceil(longest))}")
    merged = _concat(stored.name, old, added, source)
    validate_ohlcv(merged, max_gap_days=None, source=str(source))
    added_span = (_day(added.timestamps[0]), _day(added.timestamps[-1])) if len(added) else None
    return AppendPlan(stored, source, merged, len(new), n_overlap, overlap, checked, volume_differs, added_span,
                      gaps, notes)


def append_bars(
    symbol: str,
    path: str | Path,
    *,
    data_dir: str | Path,
    max_gap_days: int | None = 7,
    allow_gap: bool = False,
    price_column: str | None = None,
    dry_run: bool = False,
    rtol: float = RTOL,
) -> AppendPlan:
    """:func:`plan_append`, then write the merged series to the data folder (unless ``dry_run`` or nothing is new).

    Returns:
        The plan, with ``written`` set when the file was written.

    Raises:
        DataError, AppendError: as :func:`plan_append`; nothing is written then.
        OSError: the file could not be written; the old file is left as it was.
    """
    plan = plan_append(symbol, path, data_dir=data_dir, max_gap_days=max_gap_days, allow_gap=allow_gap,
                       price_column=price_column, rtol=rtol)
    if dry_run or plan.n_added == 0:
        return plan
    write_bars(plan.merged, plan.stored.target)
    return replace(plan, written=True)


def write_bars(bars: OHLCV, target: str | Path) -> None:
    """Write ``bars`` to ``target`` atomically, in the format its suffix names.

    The file is written in a temporary folder next to ``target`` (not itself a data file, so no
    reader lists it), read back and compared bar for bar, then moved over ``target`` with
    :func:`os.replace`. An existing file keeps its permissions.

    Raises:
        DataError: ``target`` has no data suffix, or the written file does not read back the same.
        OSError: writing failed; ``target`` is unchanged.
    """
    target = Path(target)
    fmt = _format(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _scratch(target.parent) as scratch:
        tmp = scratch / target.name
        if fmt == "parquet":
            _write_parquet(bars, tmp)
        else:
            with _open_out(tmp, gz=fmt == "csv.gz") as fh:
                _write_csv(bars, fh)
                fh.flush()
                os.fsync(fh.fileno())
        back = load_file(tmp, max_gap_days=None)
        same = np.array_equal(back.timestamps, bars.timestamps.astype("datetime64[ns]")) and all(
            np.array_equal(back.columns[k], bars.columns[k]) for k in bars.columns)
        if not same:
            raise DataError(target, "the written file does not read back as the bars written; the old file is "
                                    "unchanged")
        if target.exists():
            shutil.copymode(target, tmp)
        os.replace(tmp, target)


# --- helpers -----------------------------------------------------------------------------


def _check_name(symbol: str) -> None:
    bad = (not symbol or symbol.strip() != symbol or Path(symbol).name != symbol or symbol in {".", ".."}
           or "\\" in symbol or "\0" in symbol or symbol.startswith("."))
    if bad:
        raise AppendError(symbol or None, f"symbol {symbol!r} must be a plain name (no folder, no leading dot)",
                          reason="bad_symbol")
    if symbol.lower().endswith(SUFFIXES):
        raise AppendError(symbol, f"give the symbol without a file ending (e.g. {_stem(Path(symbol))!r}): the file "
                                  "is written as <data folder>/<SYMBOL>.csv", reason="bad_symbol")


def _find_in_dir(folder: Path, name: str) -> Path | None:
    """``<folder>/<name><suffix>``, matched case-insensitively, suffixes tried in the loaders' order."""
    if not folder.is_dir():
        return None
    by_name = {p.name.lower(): p for p in folder.iterdir() if p.is_file()}
    for suffix in SUFFIXES:
        hit = by_name.get(name.lower() + suffix)
        if hit is not None:
            return hit
    return None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_close_only(bars: OHLCV) -> bool:
    if bars.meta.get("close_only"):
        return True
    c = bars.close
    return bool(np.array_equal(bars.open, c) and np.array_equal(bars.high, c) and np.array_equal(bars.low, c))


def _check_overlap(source: Path, old: OHLCV, new: OHLCV, at: npt.NDArray[np.intp], n: int,
                   checked: tuple[str, ...], rtol: float) -> None:
    if n == 0:
        return
    bad_rows = np.zeros(n, dtype=bool)
    first_bad: dict[str, npt.NDArray[np.bool_]] = {}
    for name in checked:
        stored = old.columns[name][at]
        fresh = new.columns[name][:n]
        off = np.abs(fresh - stored) > rtol * np.maximum(np.abs(stored), np.abs(fresh))
        first_bad[name] = off
        bad_rows |= off
    if not bad_rows.any():
        return
    row = int(np.flatnonzero(bad_rows)[0])
    column = next(name for name in checked if first_bad[name][row])
    raise OverlapDisagreement(source, row=row, date=_day(new.timestamps[row]), column=column,
                              stored=float(old.columns[column][at[row]]), new=float(new.columns[column][row]),
                              n_disagree=int(bad_rows.sum()), n_overlap=n, rtol=rtol)


def _concat(name: str, old: OHLCV | None, added: OHLCV, source: Path) -> OHLCV:
    parts = [added] if old is None else [old, added]
    cols = {k: np.concatenate([p.columns[k] for p in parts]).astype(np.float64) for k in _CSV_COLUMNS}
    meta: dict[str, Any] = {"source": str(source)} if old is None else {
        "source": str(old.meta.get("source")), "appended_from": str(source)}
    return OHLCV(
        symbol=name,
        timestamps=np.concatenate([p.timestamps.astype("datetime64[ns]") for p in parts]),
        open=cols["open"], high=cols["high"], low=cols["low"], close=cols["close"], volume=cols["volume"],
        meta=meta,
    )


def _format(target: Path) -> str:
    name = target.name.lower()
    if name.endswith(".csv.gz"):
        return "csv.gz"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise DataError(target, f"unsupported file type; expected one of {', '.join(SUFFIXES)}")


@contextmanager
def _scratch(folder: Path) -> Iterator[Path]:
    """A hidden temporary folder inside ``folder`` (same file system, so ``os.replace`` is atomic)."""
    path = Path(tempfile.mkdtemp(prefix=".append-", dir=folder))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _open_out(path: Path, *, gz: bool) -> Iterator[IO[str]]:
    if gz:
        with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
            yield fh
    else:
        with path.open("w", encoding="utf-8", newline="") as fh:
            yield fh


def _time_strings(ts: npt.NDArray[np.datetime64]) -> list[str]:
    """ISO dates when every bar is at midnight, else times to the second (or finer when needed)."""
    ns = ts.astype("datetime64[ns]")
    days = ns.astype("datetime64[D]")
    if np.all(days.astype("datetime64[ns]") == ns):
        return [str(d) for d in days]
    seconds = ns.astype("datetime64[s]")
    if np.all(seconds.astype("datetime64[ns]") == ns):
        return [str(t) for t in seconds]
    return [str(t) for t in ns]


def _write_csv(bars: OHLCV, fh: IO[str]) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(_CSV_HEADER)
    columns = [bars.columns[k].tolist() for k in _CSV_COLUMNS]
    # repr of a float is the shortest text that reads back as the same float
    for when, *values in zip(_time_strings(bars.timestamps), *columns, strict=True):
        writer.writerow([when, *(repr(float(v)) for v in values)])


def _write_parquet(bars: OHLCV, path: Path) -> None:
    import pyarrow as pa  # imported here: only Parquet users pay for it
    import pyarrow.parquet as pq

    table = pa.table({"Date": pa.array(bars.timestamps.astype("datetime64[ns]")),
                      **{h: pa.array(bars.columns[k], type=pa.float64())
                         for h, k in zip(_CSV_HEADER[1:], _CSV_COLUMNS, strict=True)}})
    pq.write_table(table, path)
    with path.open("rb") as fh:
        os.fsync(fh.fileno())


def _day(t: Any) -> str:
    """A date when the timestamp is at midnight, else the time to the second."""
    ns = np.asarray(t).astype("datetime64[ns]")
    day = ns.astype("datetime64[D]")
    return str(day) if day == ns else str(ns.astype("datetime64[s]"))
