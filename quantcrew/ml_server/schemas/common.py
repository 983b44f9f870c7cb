"""Shared pieces of the wire contract: the error body, provenance, OHLCV payloads.

Pydantic (and numpy for checks) only: importable by the agent side without FastAPI, torch
or scikit-learn.
Arrays travel as lists of finite floats; NaN and infinity are refused by the schema
(422 with the field path), ragged or empty series likewise. Numbers are bounded too, so that
no finite input can overflow a computation: table values within +-``MAX_ABS_VALUE``, prices
within [``MIN_PRICE``, ``MAX_PRICE``], volumes within [0, ``MAX_VOLUME``], simple returns
within (-1, ``MAX_SIMPLE_RETURN``]. Configured size limits (rows, columns) are checked by the
server, which knows its settings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

__all__ = [
    "BAR_TIME_SCHEMA",
    "MAX_ABS_VALUE",
    "MAX_PRICE",
    "MAX_SIMPLE_RETURN",
    "MAX_VOLUME",
    "MIN_PRICE",
    "BarTime",
    "BoundedFloat",
    "ErrorBody",
    "ErrorDetail",
    "FiniteFloat",
    "HealthResponse",
    "Lineage",
    "ModelInfo",
    "NonNegativeBoundedFloat",
    "OHLCVPayload",
    "Provenance",
    "ReadyResponse",
    "TRIGGERS",
    "Trigger",
    "TriggerField",
    "WireModel",
]


class WireModel(BaseModel):
    """Base of every request and response: unknown fields are an error, not ignored."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

MAX_ABS_VALUE = 1e15
"""Largest magnitude of a number in a table (about where a float stops holding every integer, 2**53):
its fourth power summed over any allowed number of rows is still a finite float."""
MIN_PRICE = 1e-12
"""Smallest price: the log of any ratio of two allowed prices stays below 56 in magnitude."""
MAX_PRICE = 1e12
"""Largest price."""
MAX_VOLUME = 1e15
"""Largest volume of one bar."""
MAX_SIMPLE_RETURN = 1e3
"""Largest simple return of one period (+100,000 %); the smallest is just above -1 (a total loss)."""

BoundedFloat = Annotated[float, Field(allow_inf_nan=False, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
"""A finite number within +-``MAX_ABS_VALUE``: a value of a numeric table."""
NonNegativeBoundedFloat = Annotated[float, Field(allow_inf_nan=False, ge=0.0, le=MAX_ABS_VALUE)]
"""A finite number from 0 to ``MAX_ABS_VALUE`` (a volatility, a range)."""


BAR_TIME_SCHEMA: dict[str, Any] = {"type": "string", "examples": ["2024-03-28T00:00:00"]}
"""OpenAPI of a time taken from the bars sent: ISO-8601 with a UTC offset only when the bars had one, so not
always an RFC 3339 ``date-time`` (which requires the offset)."""
BarTime = Annotated[datetime, WithJsonSchema(BAR_TIME_SCHEMA)]
"""A time a reply echoes from the bars sent (naive when they were naive); documented as an ISO-8601 string."""


class ErrorDetail(WireModel):
    """The one error shape: a stable code, a sentence for a person, and structured details."""

    code: str = Field(description="Stable machine-readable code, e.g. 'invalid_input'.")
    message: str = Field(description="What went wrong and what to change.")
    details: Any = Field(default=None, description="Field paths or other structured context.")


class ErrorBody(WireModel):
    """Every non-2xx reply: `{"error": {"code", "message", "details"}}`."""

    error: ErrorDetail


def _prices(values: list[float]) -> list[float]:
    if min(values) <= 0.0:
        i = next(i for i, v in enumerate(values) if v <= 0.0)
        raise ValueError(f"prices must be positive; row {i} has {values[i]}")
    if min(values) < MIN_PRICE or max(values) > MAX_PRICE:
        i = next(i for i, v in enumerate(values) if not MIN_PRICE <= v <= MAX_PRICE)
        raise ValueError(f"prices must lie between {MIN_PRICE:g} and {MAX_PRICE:g}; row {i} has {values[i]:g}")
    return values


def _volumes(values: list[float] | None) -> list[float] | None:
    if values and (min(values) < 0.0 or max(values) > MAX_VOLUME):
        i = next(i for i, v in enumerate(values) if not 0.0 <= v <= MAX_VOLUME)
        raise ValueError(f"volumes must lie between 0 and {MAX_VOLUME:g}; row {i} has {values[i]:g}")
    return values


PriceList = Annotated[list[FiniteFloat], Field(min_length=1), AfterValidator(_prices)]
VolumeList = Annotated[list[FiniteFloat] | None, AfterValidator(_volumes)]


class OHLCVPayload(WireModel):
    """Bars sent to the server, oldest first, one list per column, all the same length."""

    timestamps: list[datetime] = Field(min_length=1, description="ISO-8601 time of each bar, strictly increasing.")
    open: PriceList
    high: PriceList
    low: PriceList
    close: PriceList
    volume: VolumeList = Field(default=None, description="Volume per bar (0 to 1e15); omit when unknown.")

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
    as_of: BarTime | None = Field(description="Timestamp of the last bar seen (as the bars gave it: with a UTC "
                                              "offset only when they had one).")


Trigger = Literal["manual", "schedule", "drift", "quality"]
"""Why a model was trained: by hand, on a schedule, because its inputs drifted, because its live quality fell."""
TRIGGERS: tuple[Trigger, ...] = ("manual", "schedule", "drift", "quality")
TriggerField = Annotated[Trigger, Field(
    description="Why this model is trained, recorded in its lineage: 'manual', 'schedule', 'drift' or 'quality'.")]
"""The ``trigger`` field of every training request (default ``"manual"``)."""


class Lineage(WireModel):
    """Where a model version came from. Every field is null (libraries empty) on entries stored before lineage."""

    parent_model_id: str | None = Field(default=None, description="The version of the same name it replaces: the "
                                        "name's full deployment when it was stored, else the previous version.")
    parent_version: int | None = Field(default=None, description="That parent's version number.")
    data_start: str | None = Field(default=None, description="First bar (or row) of the training data.")
    data_end: str | None = Field(default=None, description="Last bar (or row) of the training data.")
    data_hash: str | None = Field(default=None, description="SHA-256 of the training data as the server got it.")
    code_version: str | None = Field(default=None, description="quantcrew version that trained it.")
    libraries: dict[str, str] = Field(default_factory=dict, description="Versions of the libraries it was "
                                      "trained with (numpy, scikit-learn, hmmlearn, torch, stable-baselines3).")
    trigger: str | None = Field(default=None, description="Why it was trained: 'manual', 'schedule', 'drift' "
                                "or 'quality'.")
    gate: dict[str, Any] | None = Field(default=None, description="Its training quality gate's verdict, when its "
                                        "family has one.")


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
    lineage: Lineage = Field(default_factory=Lineage, description="Parent, training data, code and trigger.")


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
