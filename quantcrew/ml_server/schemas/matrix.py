"""The numeric-table payload of the matrix families (risk, decompose, cluster, supervised).

A table is sent column-named and row-major: ``values[i][j]`` is observation ``i`` (oldest
first) of column ``columns[j]``. Rows must all have one value per column and every value must
be a finite number within +-1e15 (NaN, infinity and larger numbers are refused by the schema, 422
with the row and column). Optional
``timestamps`` date the rows. Size limits (``server.max_rows``, ``server.max_columns``) are
checked by the server, which knows its settings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import BoundedFloat, WireModel

__all__ = ["ColumnName", "MatrixPayload"]

ColumnName = Annotated[str, Field(min_length=1, max_length=64)]


class MatrixPayload(WireModel):
    """Rows of observations (oldest first) of named numeric columns, e.g. daily returns per asset."""

    columns: list[ColumnName] = Field(min_length=1, description="Name of each column, e.g. asset symbols; unique.")
    values: list[list[BoundedFloat]] = Field(
        min_length=1, description="One row per observation, one finite number within +-1e15 per column, oldest first.",
    )
    timestamps: list[datetime] | None = Field(
        default=None, description="ISO-8601 time of each row, strictly increasing; omit for undated rows.",
    )

    @model_validator(mode="after")
    def _rectangular(self) -> MatrixPayload:
        k = len(self.columns)
        if len(set(self.columns)) != k:
            seen: set[str] = set()
            dup = next(c for c in self.columns if c in seen or seen.add(c))  # type: ignore[func-returns-value]
            raise ValueError(f"columns must be unique; '{dup}' repeats")
        for i, row in enumerate(self.values):
            if len(row) != k:
                raise ValueError(f"row {i} of values has {len(row)} numbers but there are {k} columns: rows are ragged")
        ts = self.timestamps
        if ts is not None:
            if len(ts) != len(self.values):
                raise ValueError(f"timestamps has {len(ts)} entries but values has {len(self.values)} rows")
            aware = [t.tzinfo is not None for t in ts]
            if any(aware) and not all(aware):
                raise ValueError("timestamps mix times with and without a UTC offset; use one kind")
            for i in range(1, len(ts)):
                if ts[i] <= ts[i - 1]:
                    raise ValueError(f"timestamps must be strictly increasing; row {i} is not after row {i - 1}")
        return self

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return len(self.values), len(self.columns)

    def __len__(self) -> int:
        return len(self.values)
