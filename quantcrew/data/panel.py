"""Several close-price series aligned on their common dates: the input of multi-asset models.

A :class:`Panel` holds one close column per symbol on the dates every series shares
(an inner join). :func:`align` builds it from :class:`~quantcrew.data.ohlcv.OHLCV` series;
:mod:`quantcrew.data.panel_loaders` builds it from symbols or a folder of files.

Daily series from different sources often stamp the same trading day with different times
(midnight, the close, 16:00 New York in UTC), so by default series are matched on the DATE
part of their timestamps; intraday series are matched on exact timestamps with ``on="timestamp"``.

An inner join keeps the coarsest calendar: aligning the bundled monthly ``CRUDE`` series
(stamped on the 15th) with daily ``SP500`` leaves one date per month, and only for the months
whose 15th was a trading day. ``meta["frequency"]`` holds a guess of the panel's spacing
(``"daily"``, ``"weekly"``, ``"monthly"``...; see :func:`~quantcrew.data.frequency.guess_frequency`)
and ``meta["input_frequency"]`` each input's, so that a caller can notice a monthly panel before
annualising its returns as daily ones.

Numpy and the standard library only: no pandas.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from quantcrew.data.errors import DataError
from quantcrew.data.frequency import guess_frequency
from quantcrew.data.ohlcv import OHLCV

__all__ = ["AlignmentError", "Panel", "align", "timestamp_range"]

FloatArray = npt.NDArray[np.float64]
TimeArray = npt.NDArray[np.datetime64]


class AlignmentError(DataError):
    """Series that cannot be aligned into a panel (none given, repeated symbols, too few common dates).

    Attributes:
        symbols: The symbols of the series, in the order given.
        ranges: ``symbol -> (first, last, bars)`` for each series (ISO strings; empty
            strings for a series with no bars).
    """

    def __init__(
        self,
        message: str,
        *,
        symbols: Sequence[str] = (),
        ranges: dict[str, tuple[str, str, int]] | None = None,
    ) -> None:
        self.symbols = tuple(symbols)
        self.ranges = dict(ranges or {})
        super().__init__(None, message)


@dataclass(frozen=True, eq=False)
class Panel:
    """Close prices of several symbols on common, strictly increasing dates.

    Attributes:
        symbols: One name per column, unique.
        timestamps: ``datetime64[ns]``, shape ``(n_dates,)``, strictly increasing.
        close: Positive finite prices, shape ``(n_dates, n_symbols)``; column ``j`` is ``symbols[j]``.
        meta: Provenance (sources, how the series were aligned, frequency guesses).

    Raises:
        DataError: on construction, when the shapes disagree, symbols repeat, timestamps
            are not strictly increasing, or a price is not positive and finite.
    """

    symbols: tuple[str, ...]
    timestamps: TimeArray
    close: FloatArray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        symbols = tuple(str(s) for s in self.symbols)
        timestamps = np.asarray(self.timestamps).astype("datetime64[ns]")
        close = np.asarray(self.close, dtype=np.float64)
        # Frozen dataclass: normalise the fields once, here, then never again.
        object.__setattr__(self, "symbols", symbols)
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "close", close)
        _check_panel(symbols, timestamps, close)

    def __len__(self) -> int:
        return int(self.close.shape[0])

    @property
    def n_assets(self) -> int:
        """Number of symbols (columns)."""
        return int(self.close.shape[1])

    def _take(self, sl: slice) -> Panel:
        return Panel(symbols=self.symbols, timestamps=self.timestamps[sl], close=self.close[sl], meta=dict(self.meta))

    def log_returns(self) -> FloatArray:
        """Date-to-date log returns, shape ``(len(self) - 1, n_assets)``; row ``i`` ends on date ``i + 1``."""
        return np.diff(np.log(self.close), axis=0)

    def simple_returns(self) -> FloatArray:
        """Date-to-date simple returns ``p[t] / p[t-1] - 1``, shape ``(len(self) - 1, n_assets)``."""
        return self.close[1:] / self.close[:-1] - 1.0

    def tail(self, n: int) -> Panel:
        """The last ``n`` dates (all of them when ``n`` exceeds the length)."""
        if n <= 0:
            raise ValueError(f"tail needs a positive date count, got {n}")
        return self._take(slice(max(len(self) - n, 0), None))

    def between(self, start: str | None = None, end: str | None = None) -> Panel:
        """Dates with ``start <= timestamp <= end`` (ISO strings, either may be None).

        A bare date as ``end`` covers its whole day, as in :meth:`OHLCV.between`.
        The result may be empty.
        """
        lo = 0 if start is None else int(np.searchsorted(self.timestamps, np.datetime64(start, "ns"), "left"))
        hi = len(self) if end is None else int(np.searchsorted(self.timestamps, _end_of(end), "right"))
        return self._take(slice(lo, max(lo, hi)))

    def iso_timestamps(self) -> list[str]:
        """Timestamps as ISO-8601 strings (dates only when every timestamp is at midnight)."""
        return _iso(self.timestamps)

    def column(self, symbol: str) -> FloatArray:
        """The close prices of ``symbol``.

        Raises:
            KeyError: ``symbol`` is not in the panel (the message lists the symbols).
        """
        try:
            j = self.symbols.index(symbol)
        except ValueError as exc:
            raise KeyError(f"{symbol!r} is not in the panel; symbols: {', '.join(self.symbols)}") from exc
        return self.close[:, j]

    def to_matrix_payload(self, returns: Literal["log", "simple"] = "log") -> dict[str, Any]:
        """The JSON-ready returns matrix for the ML server.

        Args:
            returns: ``"log"`` or ``"simple"`` returns.

        Returns:
            ``{"columns": [symbols], "timestamps": [ISO dates of the returns, i.e. dates[1:]],
            "values": [[one float per symbol] per return date]}``.

        Raises:
            ValueError: ``returns`` is neither ``"log"`` nor ``"simple"``.
        """
        if returns == "log":
            values = self.log_returns()
        elif returns == "simple":
            values = self.simple_returns()
        else:
            raise ValueError(f"returns must be 'log' or 'simple', got {returns!r}")
        return {"columns": list(self.symbols), "timestamps": self.iso_timestamps()[1:], "values": values.tolist()}


def align(
    series: Sequence[OHLCV],
    *,
    how: Literal["inner"] = "inner",
    min_overlap: int = 30,
    on: Literal["date", "timestamp"] = "date",
) -> Panel:
    """Align the closes of several series on the dates they all share.

    By default series are matched on the DATE part of their timestamps: daily series from
    different sources may stamp the same trading day at different times of day. The panel's
    timestamps are then midnight dates. Use ``on="timestamp"`` for intraday series, which have
    several bars per date and are matched on exact timestamps.

    Only the inner join exists: no date is invented and no price carried forward, so a
    monthly series aligned with daily ones leaves a monthly panel (see ``meta["frequency"]``).

    Args:
        series: The series, one per symbol; columns follow this order.
        how: ``"inner"`` (the intersection of the dates).
        min_overlap: Fewest common dates accepted (at least 1).
        on: ``"date"`` (default) or ``"timestamp"``.

    Returns:
        The panel; ``meta`` holds ``aligned_on``, ``how``, ``sources``, ``ranges`` (each input's
        first / last date and length), ``dropped`` (dates of each input not in the panel),
        ``frequency`` and ``input_frequency``.

    Raises:
        AlignmentError: no series, a repeated symbol, a series with several bars on one date
            (with ``on="date"``) or unsorted timestamps, or fewer than ``min_overlap`` common
            dates (the message names every symbol with its date range).
        ValueError: an unknown ``how`` or ``on``, or ``min_overlap < 1``.
    """
    if how != "inner":
        raise ValueError(f"how must be 'inner' (the only join that invents no prices), got {how!r}")
    if on not in ("date", "timestamp"):
        raise ValueError(f"on must be 'date' or 'timestamp', got {on!r}")
    if min_overlap < 1:
        raise ValueError(f"min_overlap must be at least 1, got {min_overlap}")
    items = list(series)
    if not items:
        raise AlignmentError("no series to align: pass at least one OHLCV series")
    symbols = [s.symbol for s in items]
    ranges = {s.symbol: timestamp_range(s.timestamps) for s in items}
    repeated = [f"{name!r} ({count} times)" for name, count in Counter(symbols).items() if count > 1]
    if repeated:
        raise AlignmentError(f"repeated symbol{'s' if len(repeated) > 1 else ''} {', '.join(repeated)}: "
                             "each series in a panel needs its own symbol", symbols=symbols, ranges=ranges)

    keys = [_keys(s, on, symbols, ranges) for s in items]
    common = reduce(lambda a, b: np.intersect1d(a, b, assume_unique=True), keys)
    if common.size < min_overlap:
        raise AlignmentError(_overlap_message(symbols, ranges, keys, int(common.size), min_overlap),
                             symbols=symbols, ranges=ranges)

    columns = [np.asarray(s.close, dtype=np.float64)[np.searchsorted(k, common)] for s, k in zip(items, keys,
                                                                                              strict=True)]
    timestamps = common.astype("datetime64[ns]")
    meta: dict[str, Any] = {
        "aligned_on": on,
        "how": how,
        "sources": {s.symbol: s.meta.get("source", s.meta.get("sample")) for s in items},
        "ranges": ranges,
        "dropped": {s.symbol: int(len(k) - common.size) for s, k in zip(items, keys, strict=True)},
        "frequency": guess_frequency(timestamps),
        "input_frequency": {s.symbol: str(s.meta.get("frequency") or guess_frequency(s.timestamps)) for s in items},
    }
    return Panel(symbols=tuple(symbols), timestamps=timestamps, close=np.column_stack(columns), meta=meta)


def timestamp_range(timestamps: npt.ArrayLike) -> tuple[str, str, int]:
    """One entry of :attr:`AlignmentError.ranges`: a series' first and last timestamp and its length.

    Args:
        timestamps: The series' timestamps, sorted.

    Returns:
        ``(first, last, bars)`` with ISO strings (dates only when every timestamp is at
        midnight); ``("", "", 0)`` for no timestamps.
    """
    ts = np.asarray(timestamps).astype("datetime64[ns]")
    if ts.size == 0:
        return ("", "", 0)
    first, last = _iso(ts[[0, -1]])
    return (first, last, int(ts.size))


# --- helpers -----------------------------------------------------------------------------


def _check_panel(symbols: tuple[str, ...], timestamps: TimeArray, close: FloatArray) -> None:
    if timestamps.ndim != 1:
        raise DataError("panel", f"timestamps must be 1-D, got shape {timestamps.shape}")
    if close.ndim != 2 or close.shape != (timestamps.size, len(symbols)):
        raise DataError("panel", f"close must have shape (n_dates, n_symbols) = ({timestamps.size}, {len(symbols)}), "
                                 f"got {close.shape}")
    repeated = sorted(name for name, count in Counter(symbols).items() if count > 1)
    if repeated:
        raise DataError("panel", f"repeated symbols: {', '.join(repeated)}")
    if np.any(np.isnat(timestamps)):
        raise DataError("panel", "timestamps hold a missing value (NaT)")
    if timestamps.size > 1:
        bad = np.flatnonzero(np.diff(timestamps.view(np.int64)) <= 0)
        if bad.size:
            i = int(bad[0]) + 1
            raise DataError("panel", f"timestamps must be strictly increasing: {_iso(timestamps[i - 1:i + 1])} "
                                     f"at rows {i - 1}, {i}")
    bad_cells = ~(np.isfinite(close) & (close > 0.0))
    if bad_cells.any():
        problems = []
        for j in np.flatnonzero(bad_cells.any(axis=0)):
            rows = np.flatnonzero(bad_cells[:, j])
            first = int(rows[0])
            problems.append(f"{symbols[j]}: {rows.size} prices not positive and finite, first "
                            f"{close[first, j]:g} on {_iso(timestamps[first:first + 1])[0]}")
        raise DataError("panel", problems)


def _keys(bars: OHLCV, on: str, symbols: list[str], ranges: dict[str, tuple[str, str, int]]) -> TimeArray:
    """The alignment key of each bar (date or exact timestamp), checked strictly increasing."""
    ts = np.asarray(bars.timestamps).astype("datetime64[ns]")
    keys = ts.astype("datetime64[D]") if on == "date" else ts
    if keys.size > 1:
        step = np.diff(keys.view(np.int64))
        if np.any(step < 0):
            i = int(np.flatnonzero(step < 0)[0]) + 1
            raise AlignmentError(f"{bars.symbol}: timestamps are not in increasing order (row {i}, "
                                 f"{_iso(ts[i:i + 1])[0]}); load with sort=True", symbols=symbols, ranges=ranges)
        if np.any(step == 0):
            i = int(np.flatnonzero(step == 0)[0]) + 1
            hint = ("several bars on one date (intraday data?): align with on='timestamp'" if on == "date"
                    else "a duplicate timestamp")
            raise AlignmentError(f"{bars.symbol}: {hint}; first at row {i} ({_iso(ts[i:i + 1])[0]})",
                                 symbols=symbols, ranges=ranges)
    return keys


def _overlap_message(symbols: list[str], ranges: dict[str, tuple[str, str, int]], keys: list[TimeArray],
                     n_common: int, min_overlap: int) -> str:
    spans = "; ".join(f"{s} {r[0]}..{r[1]} ({r[2]} bars)" if r[2] else f"{s} (no bars)"
                      for s, r in ranges.items())
    filled = [k for k in keys if k.size]
    window = ""
    if len(filled) == len(keys):
        latest_start, earliest_end = _iso(np.array([max(k[0] for k in filled), min(k[-1] for k in filled)])
                                          .astype("datetime64[ns]"))
        if latest_start > earliest_end:
            window = f"; the ranges do not overlap (latest start {latest_start} is after earliest end {earliest_end})"
        else:
            window = f"; shared window {latest_start}..{earliest_end}"
    return (f"only {n_common} common date{'' if n_common == 1 else 's'} across {', '.join(symbols)} "
            f"(need at least {min_overlap}): {spans}{window}")


def _iso(timestamps: TimeArray) -> list[str]:
    """ISO strings, dates only when every timestamp is at midnight (as ``OHLCV.iso_timestamps``)."""
    days = timestamps.astype("datetime64[D]")
    if np.all(days.astype("datetime64[ns]") == timestamps):
        return [str(d) for d in days]
    return [str(t) for t in timestamps.astype("datetime64[s]")]


def _end_of(end: str) -> np.datetime64:
    """An inclusive upper bound: a bare date covers its whole day (as ``OHLCV.between``)."""
    ts = np.datetime64(end, "ns")
    if len(end) <= 10:  # YYYY-MM-DD
        ts = ts + np.timedelta64(1, "D") - np.timedelta64(1, "ns")
    return ts
