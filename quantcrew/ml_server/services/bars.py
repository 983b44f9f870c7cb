"""Bars as the services see them: numpy columns built once from the wire payload."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.common import OHLCVPayload

__all__ = ["Bars", "bars_from_payload"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Bars:
    """OHLCV columns as float64 arrays; ``volume`` is None when the client sent none."""

    timestamps: list[datetime]
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
        """Timestamps as ISO strings (date only when the time is midnight)."""
        return [t.date().isoformat() if t.hour == t.minute == t.second == t.microsecond == 0 and t.tzinfo is None
                else t.isoformat() for t in self.timestamps]


def bars_from_payload(payload: OHLCVPayload, *, min_rows: int = 2) -> Bars:
    """Build :class:`Bars` and hash the input.

    Raises:
        InvalidInputError: fewer than ``min_rows`` bars.
    """
    n = len(payload.timestamps)
    if n < min_rows:
        raise InvalidInputError(
            f"data has {n} bars; at least {min_rows} are needed",
            details=[{"loc": ["body", "data", "timestamps"], "msg": f"need at least {min_rows} rows"}],
        )
    o = np.asarray(payload.open, dtype=np.float64)
    h = np.asarray(payload.high, dtype=np.float64)
    lo = np.asarray(payload.low, dtype=np.float64)
    c = np.asarray(payload.close, dtype=np.float64)
    v = None if payload.volume is None else np.asarray(payload.volume, dtype=np.float64)
    digest = hashlib.sha256()
    digest.update(",".join(t.isoformat() for t in payload.timestamps).encode())
    for arr in (o, h, lo, c) + ((v,) if v is not None else ()):
        digest.update(arr.tobytes())
    return Bars(list(payload.timestamps), o, h, lo, c, v, "sha256:" + digest.hexdigest())
