"""The OHLCV container shared by loaders, the synthetic generator and the tools.

A light, numpy-only value object: no pandas, no ML library, so the agent side can
hold market data without pulling a heavy stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["OHLCV"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class OHLCV:
    """Daily (or intraday) bars for one symbol.

    Attributes:
        symbol: Name of the instrument (``"SP500"``, a ticker, a file stem).
        timestamps: ``datetime64[ns]`` array, sorted and unique once validated.
        open, high, low, close: Prices, float64.
        volume: Traded volume, float64 (zeros where the source has none).
        meta: Free-form provenance (source file, generator parameters).
    """

    symbol: str
    timestamps: npt.NDArray[np.datetime64]
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.close.shape[0])

    @property
    def columns(self) -> dict[str, FloatArray]:
        """The numeric columns by their canonical lower-case name."""
        return {
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
        }

    def _take(self, sl: slice) -> OHLCV:
        return OHLCV(
            symbol=self.symbol,
            timestamps=self.timestamps[sl],
            open=self.open[sl],
            high=self.high[sl],
            low=self.low[sl],
            close=self.close[sl],
            volume=self.volume[sl],
            meta=dict(self.meta),
        )

    def tail(self, n: int) -> OHLCV:
        """The last ``n`` bars (all of them when ``n`` exceeds the length)."""
        if n <= 0:
            raise ValueError(f"tail needs a positive bar count, got {n}")
        return self._take(slice(max(len(self) - n, 0), None))

    def head(self, n: int) -> OHLCV:
        """The first ``n`` bars."""
        if n <= 0:
            raise ValueError(f"head needs a positive bar count, got {n}")
        return self._take(slice(0, n))

    def between(self, start: str | None = None, end: str | None = None) -> OHLCV:
        """Bars with ``start <= timestamp <= end`` (ISO dates, either may be None)."""
        lo = 0 if start is None else int(np.searchsorted(self.timestamps, np.datetime64(start, "ns"), "left"))
        hi = len(self) if end is None else int(np.searchsorted(self.timestamps, _end_of(end), "right"))
        return self._take(slice(lo, hi))

    def iloc(self, sl: slice) -> OHLCV:
        """Bars selected by a positional slice."""
        return self._take(sl)

    def log_returns(self) -> FloatArray:
        """Close-to-close log returns (length ``len(self) - 1``)."""
        return np.diff(np.log(self.close))

    def iso_timestamps(self) -> list[str]:
        """Timestamps as ISO-8601 strings (dates only when every bar is at midnight)."""
        days = self.timestamps.astype("datetime64[D]")
        if np.all(days.astype("datetime64[ns]") == self.timestamps):
            return [str(d) for d in days]
        return [str(t) for t in self.timestamps.astype("datetime64[s]")]


def _end_of(end: str) -> np.datetime64:
    """An inclusive upper bound: a bare date covers its whole day."""
    ts = np.datetime64(end, "ns")
    if len(end) <= 10:  # YYYY-MM-DD
        ts = ts + np.timedelta64(1, "D") - np.timedelta64(1, "ns")
    return ts
