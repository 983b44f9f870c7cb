"""Errors raised for market data that cannot be loaded or does not hold up.

::

    ValueError
     └── DataError                  bad or unreadable data: names the file, rows, columns
          ├── UnknownSymbolError     a symbol that is neither a sample, a file in data_dir, nor a path
          └── SampleUnavailableError a bundled sample whose files are not installed (no ``arch``)

Rows are 0-based data rows: the first bar after a CSV header is row 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["MAX_PROBLEMS", "DataError", "SampleUnavailableError", "UnknownSymbolError", "format_problem"]

MAX_PROBLEMS = 20
"""At most this many problems are kept; the rest are summarised as one '... and N more' line."""


def format_problem(message: str, *, row: int | None = None, column: str | None = None) -> str:
    """One problem as a line: ``"row 17, column 'high': <message>"`` (either locator may be absent)."""
    where = []
    if row is not None:
        where.append(f"row {row}")
    if column is not None:
        where.append(f"column {column!r}")
    return f"{', '.join(where)}: {message}" if where else message


class DataError(ValueError):
    """Market data that cannot be loaded or fails validation.

    Attributes:
        source: The file path or symbol the data came from (None when unknown).
        row: 0-based data row of the first problem, when it has one.
        column: Column of the first problem, when it has one.
        problems: Every problem found, one line each, capped at ``MAX_PROBLEMS`` lines plus a
            ``"... and N more"`` line.
        n_problems: How many problems were found in all (before the cap).
    """

    def __init__(
        self,
        source: str | Path | None,
        problems: str | Sequence[str],
        *,
        row: int | None = None,
        column: str | None = None,
        n_problems: int | None = None,
    ) -> None:
        found = [problems] if isinstance(problems, str) else list(problems)
        total = max(n_problems if n_problems is not None else len(found), len(found))
        kept = found[:MAX_PROBLEMS]
        if total > len(kept):
            kept.append(f"... and {total - len(kept)} more")
        self.source = None if source is None else str(source)
        self.row = row
        self.column = column
        self.problems = kept
        self.n_problems = total
        super().__init__(self._render())

    @classmethod
    def at(
        cls, source: str | Path | None, message: str, *, row: int | None = None, column: str | None = None
    ) -> DataError:
        """A single-problem error located at ``row`` / ``column``."""
        return cls(source, format_problem(message, row=row, column=column), row=row, column=column)

    def _render(self) -> str:
        prefix = f"{self.source}: " if self.source else ""
        if len(self.problems) == 1:
            return prefix + self.problems[0]
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"{prefix}{self.n_problems} problems found:\n{lines}"

    def __str__(self) -> str:
        return self._render()


class UnknownSymbolError(DataError):
    """A symbol that is not a bundled sample, not a file in the data folder, and not a path.

    Attributes:
        symbol: The symbol asked for.
        samples: Names of the bundled samples.
        files: Data files found in ``data_dir`` (empty when there is none).
        data_dir: The folder searched, or None.
    """

    def __init__(
        self,
        symbol: str,
        *,
        samples: Iterable[str],
        files: Iterable[str] = (),
        data_dir: str | Path | None = None,
        hint: str | None = None,
    ) -> None:
        self.symbol = symbol
        self.samples = list(samples)
        self.files = list(files)
        self.data_dir = None if data_dir is None else Path(data_dir)
        parts = [f"bundled samples: {', '.join(self.samples) or 'none'}"]
        if self.data_dir is not None:
            parts.append(f"files in {self.data_dir}: {', '.join(self.files)}" if self.files
                         else f"no data files in {self.data_dir}")
        message = f"unknown symbol {symbol!r}; available: " + "; ".join(parts)
        if hint:
            message += f" ({hint})"
        super().__init__(symbol, message)

    def _render(self) -> str:
        # The symbol is already quoted in the message; do not repeat it as a prefix.
        return self.problems[0]


class SampleUnavailableError(DataError):
    """A bundled sample whose data file is not installed (the ``arch`` package is missing or too old)."""
