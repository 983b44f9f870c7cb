"""Numeric tables as the services see them: one float64 array built once from the payload."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.matrix import MatrixPayload

__all__ = ["Matrix", "check_columns", "finite_list", "finite_rows", "matrix_from_payload"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Matrix:
    """``values`` is (rows, columns) float64; ``times`` is ``datetime64[us]`` or None when undated."""

    columns: list[str]
    values: FloatArray
    timestamps: list[datetime] | None
    times: npt.NDArray[np.datetime64] | None
    data_hash: str

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_columns(self) -> int:
        return int(self.values.shape[1])

    @property
    def as_of(self) -> datetime | None:
        """Time of the last row, or None for undated rows."""
        return self.timestamps[-1] if self.timestamps else None

    def iso(self) -> list[str] | None:
        """Row times as ISO strings (dates when every row is at midnight), or None when undated."""
        return None if self._iso is None else list(self._iso)

    def row_names(self) -> list[str]:
        """ISO times of the rows, or their indices as strings when undated."""
        return self.iso() or [str(i) for i in range(self.n_rows)]

    @cached_property
    def _iso(self) -> list[str] | None:
        if self.times is None:
            return None
        days = self.times.astype("datetime64[D]")
        if np.array_equal(days.astype("datetime64[us]"), self.times):
            out: list[str] = np.datetime_as_string(days, unit="D").tolist()
        else:
            out = np.datetime_as_string(self.times, unit="s").tolist()
        return out

    def constant_columns(self, tol: float = 0.0) -> list[str]:
        """Names of columns whose values do not vary (std <= tol)."""
        std = self.values.std(axis=0) if self.n_rows > 1 else np.zeros(self.n_columns)
        return [c for c, s in zip(self.columns, std, strict=True) if s <= tol]


def matrix_from_payload(payload: MatrixPayload, *, min_rows: int = 2, field: str = "data") -> Matrix:
    """Build a :class:`Matrix` and hash the input.

    Raises:
        InvalidInputError: fewer than ``min_rows`` rows.
    """
    n = len(payload.values)
    if n < min_rows:
        raise InvalidInputError(
            f"{field} has {n} rows; at least {min_rows} are needed",
            details=[{"loc": [field, "values"], "msg": f"need at least {min_rows} rows", "rows": n}],
        )
    values = np.asarray(payload.values, dtype=np.float64).reshape(n, len(payload.columns))
    digest = hashlib.sha256("\x1f".join(payload.columns).encode())
    digest.update(values.tobytes())
    times = None
    if payload.timestamps is not None:
        times = _as_datetime64(payload.timestamps)
        digest.update(times.view(np.int64).tobytes())
    return Matrix(list(payload.columns), values, payload.timestamps, times, "sha256:" + digest.hexdigest())


def _as_datetime64(stamps: list[datetime]) -> npt.NDArray[np.datetime64]:
    if any(t.tzinfo is not None for t in stamps):
        stamps = [t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t for t in stamps]
    return np.array(stamps, dtype="datetime64[us]")


def check_columns(fitted: list[str], given: list[str], *, field: str = "data") -> None:
    """Refuse a table whose columns differ from a stored model's by name or order (422 listing the difference)."""
    if fitted == given:
        return
    missing = [c for c in fitted if c not in given]
    extra = [c for c in given if c not in fitted]
    if missing or extra:
        msg = f"{field} columns do not match the model's: missing {missing}, extra {extra}"
    else:
        msg = f"{field} has the model's columns in another order"
    raise InvalidInputError(
        f"{msg}; expected exactly {fitted}, in that order",
        details=[{"loc": [field, "columns"], "msg": msg, "missing": missing, "extra": extra,
                  "expected": fitted}],
    )


def finite_list(values: npt.ArrayLike) -> list[float]:
    """A 1-D array as a list of floats for a reply, with any non-finite value set to 0.0.

    A last guard only: services check their inputs so that no NaN arises; the schema would
    refuse one and turn a reply into a 500.
    """
    out: list[float] = np.nan_to_num(np.asarray(values, dtype=np.float64), posinf=0.0, neginf=0.0).tolist()
    return out


def finite_rows(values: npt.ArrayLike) -> list[list[float]]:
    """A 2-D array as lists of floats for a reply (non-finite values set to 0.0, as :func:`finite_list`)."""
    out: list[list[float]] = np.nan_to_num(np.asarray(values, dtype=np.float64), posinf=0.0, neginf=0.0).tolist()
    return out
