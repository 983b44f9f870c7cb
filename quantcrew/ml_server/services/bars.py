"""Bars as the services see them: numpy columns built once from the wire payload."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

import numpy as np
import numpy.typing as npt

from quantcrew.data.loaders import bars_hash
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.common import OHLCVPayload

__all__ = ["Bars", "bars_from_payload"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Bars:
    """OHLCV columns as float64 arrays; ``volume`` is None when the client sent none.

    ``times`` holds the timestamps as ``datetime64[us]`` (aware times converted to UTC).
    """

    timestamps: list[datetime]
    times: npt.NDArray[np.datetime64]
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray | None
    data_hash: str

    def __len__(self) -> int:
        return int(self.close.shape[0])

    @property
    def as_of(self) -> datetime:
        return self.timestamps[-1]

    def iso(self) -> list[str]:
        """Timestamps as ISO strings: dates when every bar is at midnight (daily bars)."""
        return list(self._iso)

    def provenance(self) -> dict[str, str | int]:
        """What a stored model records of the bars it was fitted on: hash, first and last bar, count."""
        iso = self._iso
        return {"data_hash": self.data_hash, "data_start": iso[0], "data_end": iso[-1], "n_bars": len(self)}

    @cached_property
    def _iso(self) -> list[str]:
        days = self.times.astype("datetime64[D]")
        if np.array_equal(days.astype("datetime64[us]"), self.times):
            out: list[str] = np.datetime_as_string(days, unit="D").tolist()
        else:
            out = np.datetime_as_string(self.times, unit="s").tolist()
        return out


def bars_from_payload(payload: OHLCVPayload, *, min_rows: int = 2) -> Bars:
    """Build :class:`Bars` and hash the input.

    Raises:
        InvalidInputError: fewer than ``min_rows`` bars.
    """
    n = len(payload.timestamps)
    if n < min_rows:
        raise InvalidInputError(
            f"data has {n} bars; at least {min_rows} are needed",
            details=[{"loc": ["data", "timestamps"], "msg": f"need at least {min_rows} rows"}],
        )
    o = np.asarray(payload.open, dtype=np.float64)
    h = np.asarray(payload.high, dtype=np.float64)
    lo = np.asarray(payload.low, dtype=np.float64)
    c = np.asarray(payload.close, dtype=np.float64)
    v = None if payload.volume is None else np.asarray(payload.volume, dtype=np.float64)
    times = _as_datetime64(payload.timestamps)
    digest = bars_hash(times, (o, h, lo, c) + ((v,) if v is not None else ()))
    return Bars(list(payload.timestamps), times, o, h, lo, c, v, digest)


def _as_datetime64(stamps: list[datetime]) -> npt.NDArray[np.datetime64]:
    """``datetime64[us]`` in one C pass; aware times are first converted to naive UTC."""
    if any(t.tzinfo is not None for t in stamps):
        stamps = [t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t for t in stamps]
    return np.array(stamps, dtype="datetime64[us]")
