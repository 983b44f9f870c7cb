"""Shared pieces of the wire contract: the error body, provenance, OHLCV payloads.

Pydantic (and numpy for checks) only: importable by the agent side without FastAPI, torch
or scikit-learn.
Arrays travel as lists of finite floats; NaN and infinity are refused by the schema
(422 with the field path), ragged or empty series likewise. Configured size limits
(rows, columns) are checked by the server, which knows its settings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "FiniteFloat",
    "HealthResponse",
    "ModelInfo",
    "OHLCVPayload",
    "Provenance",
    "ReadyResponse",
    "WireModel",
]


class WireModel(BaseModel):
    """Base of every request and response: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class ErrorDetail(WireModel):
    """The one error shape: a stable code, a sentence for a person, and structured details."""

    code: str = Field(description="Stable machine-readable code, e.g. 'invalid_input'.")
    message: str = Field(description="What went wrong and what to change.")
    details: Any = Field(default=None, description="Field paths or other structured context.")


class ErrorBody(WireModel):
    """Every non-2xx reply: `{"error": {"code", "message", "details"}}`."""

    error: ErrorDetail


def _positive(values: list[float]) -> list[float]:
    if min(values) <= 0.0:
        i = next(i for i, v in enumerate(values) if v <= 0.0)
        raise ValueError(f"prices must be positive; row {i} has {values[i]}")
    return values


PriceList = Annotated[list[FiniteFloat], Field(min_length=1), AfterValidator(_positive)]


class OHLCVPayload(WireModel):
    """Bars sent to the server, oldest first, one list per column, all the same length."""

    timestamps: list[datetime] = Field(min_length=1, description="ISO-8601 time of each bar, strictly increasing.")
    open: PriceList
    high: PriceList
    low: PriceList
    close: PriceList
    volume: list[FiniteFloat] | None = Field(default=None, description="Volume per bar; omit when unknown.")

    @model_validator(mode="after")
    def _same_length_and_sorted(self) -> OHLCVPayload:
        n = len(self.timestamps)
        cols: dict[str, list[float] | None] = {
            "open": self.open, "high": self.high, "low": self.low, "close": self.close, "volume": self.volume,
        }
        for name, col in cols.items():
            if col is not None and len(col) != n:
                raise ValueError(f"column '{name}' has {len(col)} values but 'timestamps' has {n}: rows are ragged")
        ts = self.timestamps
        aware = [t.tzinfo is not None for t in ts]
        if any(aware) and not all(aware):
            i = aware.index(not aware[0])
            raise ValueError(f"timestamps mix times with and without a UTC offset (row 0 and row {i}); use one kind")
        if any(b <= a for a, b in zip(ts, ts[1:], strict=False)):
            i = next(i for i in range(1, n) if ts[i] <= ts[i - 1])
            raise ValueError(
                f"timestamps must be strictly increasing; row {i} ({ts[i].isoformat()}) is not after row {i - 1}"
            )
        o, h, lo, c = (np.asarray(x, dtype=np.float64) for x in (self.open, self.high, self.low, self.close))
        bad = (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"row {i}: high must be >= max(open, close) and low <= min(open, close)")
        return self

    def __len__(self) -> int:
        return len(self.timestamps)


class Provenance(WireModel):
    """Where an answer came from. Every inference reply carries these fields."""

    model_id: str | None = Field(
        description="Registry id of the model used; null for a stateless fit that was not saved.")
    model_version: int | None = Field(description="Version of that model name in the registry.")
    method_used: str = Field(
        description="The method that actually produced the answer (never the one merely asked for).")
    fallback: bool = Field(description="True when the server fell back from the requested method.")
    fallback_reason: str | None = Field(default=None, description="Why it fell back, when it did.")
    data_hash: str = Field(description="SHA-256 of the input bars as the server received them.")
    seed: int | None = Field(description="Seed used where randomness was involved.")
    as_of: datetime | None = Field(description="Timestamp of the last bar seen.")


class ModelInfo(WireModel):
    """A registry entry."""

    model_id: str
    name: str
    version: int
    family: str
    method: str
    sha256: str
    created_at: datetime
    stage: str
    metadata: dict[str, Any] = Field(default_factory=dict)


class HealthResponse(WireModel):
    """Liveness: the process answers."""

    status: str = "ok"
    version: str


class ReadyResponse(WireModel):
    """Readiness: registry open, device known."""

    ready: bool
    device: str
    models: int
    families: list[str]
