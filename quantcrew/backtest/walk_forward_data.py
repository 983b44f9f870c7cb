"""The data of a walk-forward run: bars of every symbol on common dates, and a checked span.

Loaded and checked on the agent side, before any ML server is involved, so that a command line
can refuse a bad symbol or date at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from quantcrew.data.errors import DataError
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.symbols import load_symbol

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings

__all__ = ["BacktestInputError", "WalkForwardData", "prepare_data"]


class BacktestInputError(ValueError):
    """A walk-forward argument that cannot be used; ``field`` names it and the message says why."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, eq=False)
class WalkForwardData:
    """Bars of every symbol on common dates, cut at ``end``, and where the span starts.

    Attributes:
        bars: One series per symbol, aligned (same timestamps), from the first common date to ``end``.
        start_index: Index of the first bar of the span (bars before it are training history).
    """

    bars: tuple[OHLCV, ...]
    start_index: int

    @property
    def symbols(self) -> list[str]:
        """Symbol of each series."""
        return [b.symbol for b in self.bars]

    @property
    def dates(self) -> list[str]:
        """ISO dates of the span's bars."""
        return self.bars[0].iso_timestamps()[self.start_index:]


def prepare_data(symbols: str | Sequence[str | OHLCV], start: str, end: str, *, settings: Settings | None = None,
                 min_train: int = 500) -> WalkForwardData:
    """Load and align the bars and check the span, before any server is involved.

    Args:
        symbols: A symbol, or symbols / ready-made series (``OHLCV``), one column each.
        start: First date of the span (ISO ``YYYY-MM-DD``).
        end: Last date of the span (ISO ``YYYY-MM-DD``), inclusive.
        settings: Where data files are (``settings.data``); None: bundled samples and paths only.
        min_train: Bars needed before ``start`` for the first regime fit.

    Raises:
        UnknownSymbolError: a symbol matches nothing (the message lists the known ones).
        DataError: a file does not load, or the symbols share too few dates.
        BacktestInputError: a bad date, ``start`` after ``end``, a span outside the data, or too
            little history before ``start`` (the message names the field and the data's range).
    """
    names = [symbols] if isinstance(symbols, str) else list(symbols)
    if not names:
        raise BacktestInputError("symbols", "give at least one symbol")
    start_day, end_day = _day("start", start), _day("end", end)
    if start_day > end_day:
        raise BacktestInputError("start", f"{start} is after end {end}")
    data_dir = settings.data.data_dir if settings is not None else None
    max_gap = settings.data.max_gap_days if settings is not None else 7
    loaded = [s if isinstance(s, OHLCV) else load_symbol(s, data_dir=data_dir, max_gap_days=max_gap) for s in names]
    seen = [b.symbol for b in loaded]
    if len(set(seen)) != len(seen):
        raise BacktestInputError("symbols", f"each symbol once, got {seen}")
    bars = _align(loaded)
    days = bars[0].timestamps.astype("datetime64[D]")
    first, last = str(days[0]), str(days[-1])
    where = f"{'the common dates of ' if len(bars) > 1 else ''}{', '.join(seen)} run from {first} to {last}"
    if end_day > days[-1]:
        raise BacktestInputError("end", f"{end} is after the data: {where}")
    if start_day < days[0]:
        raise BacktestInputError("start", f"{start} is before the data: {where}")
    s = int(np.searchsorted(days, start_day, "left"))
    e = int(np.searchsorted(days, end_day, "right")) - 1
    if e <= s:
        raise BacktestInputError("end", f"the span {start}..{end} holds {max(e - s + 1, 0)} bar(s); need at least 2")
    if s < min_train:
        earliest = str(days[min_train]) if min_train < len(days) else "(none)"
        raise BacktestInputError("start", f"{start} leaves {s} bars of history before it; the first regime fit "
                                          f"needs min_train={min_train} ({where}: start on {earliest} or later)")
    return WalkForwardData(bars=tuple(b.iloc(slice(0, e + 1)) for b in bars), start_index=s)


def _day(name: str, value: str) -> np.datetime64:
    try:
        return np.datetime64(str(value).strip(), "D")
    except ValueError as exc:
        raise BacktestInputError(name, f"'{value}' is not a date; use YYYY-MM-DD") from exc


def _align(bars: list[OHLCV]) -> list[OHLCV]:
    if len(bars) == 1:
        return bars
    common = bars[0].timestamps
    for b in bars[1:]:
        common = np.intersect1d(common, b.timestamps)
    if common.size < 2:
        ranges = "; ".join(f"{b.symbol} {b.iso_timestamps()[0]}..{b.iso_timestamps()[-1]}" for b in bars if len(b))
        raise DataError(None, f"the symbols share {common.size} date(s) ({ranges})")
    return [b.iloc(slice(None)) if len(b) == common.size else _take(b, np.searchsorted(b.timestamps, common))
            for b in bars]


def _take(b: OHLCV, idx: npt.NDArray[np.intp]) -> OHLCV:
    return OHLCV(symbol=b.symbol, timestamps=b.timestamps[idx], open=b.open[idx], high=b.high[idx], low=b.low[idx],
                 close=b.close[idx], volume=b.volume[idx], meta=dict(b.meta))
