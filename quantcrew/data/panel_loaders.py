"""Panels loaded from symbols (bundled samples, files in a data folder, paths) or from a folder of files.

:func:`load_panel` resolves each symbol as :func:`~quantcrew.data.symbols.load_symbol` does;
:func:`load_panel_dir` takes every data file in a folder, one symbol per file. Both then
:func:`~quantcrew.data.panel.align` the series on the dates they share.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from quantcrew.data.errors import DataError
from quantcrew.data.loaders import SUFFIXES, load_file
from quantcrew.data.panel import AlignmentError, Panel, align, timestamp_range
from quantcrew.data.symbols import load_symbol

__all__ = ["load_panel", "load_panel_dir"]


def load_panel(
    symbols: Sequence[str],
    *,
    data_dir: str | Path | None = None,
    max_gap_days: int | None = None,
    start: str | None = None,
    end: str | None = None,
    min_overlap: int = 30,
) -> Panel:
    """Load symbols with :func:`~quantcrew.data.symbols.load_symbol` and align them.

    Each symbol resolves as in ``load_symbol``: a bundled sample (``SP500``, ``NASDAQ``,
    ``VIX``, ``CRUDE`` and their aliases), a file in ``data_dir``, or a file path. Columns
    carry the loaded series' symbols (the canonical sample name, or the file stem), so
    ``"SPX"`` and ``"SP500"`` together are refused as a repeated symbol.

    Mind the bundled samples' calendars: ``CRUDE`` is MONTHLY (the 15th of each month), so a
    panel with it is monthly, holding only the months whose 15th is a date of every other
    series; ``VIX`` is an index LEVEL (a volatility in percent), not a price, and its
    "returns" are changes in volatility. ``meta["frequency"]`` says what the panel became.

    Args:
        symbols: Symbols to load, in column order.
        data_dir: Folder of data files (``Settings.data.data_dir``), or None.
        max_gap_days: Gap tolerance for files (None: no gap check); samples use their own.
        start: Keep dates on or after this ISO date before aligning (None: from the start).
        end: Keep dates on or before this ISO date before aligning (None: to the end).
        min_overlap: Fewest common dates accepted.

    Returns:
        The aligned panel (see :func:`align` for its ``meta``); ``meta["requested"]`` lists
        ``symbols`` as given.

    Raises:
        UnknownSymbolError: a symbol matches nothing.
        DataError: a file does not load or validate.
        AlignmentError: as :func:`align`, counting only the dates in ``[start, end]``.
    """
    loaded = [load_symbol(s, data_dir=data_dir, max_gap_days=max_gap_days) for s in symbols]
    asked: dict[str, list[str]] = {}
    for requested, bars in zip(symbols, loaded, strict=True):
        asked.setdefault(bars.symbol, []).append(requested)
    repeated = [f"{name} (asked as {', '.join(repr(a) for a in names)})" for name, names in asked.items()
                if len(names) > 1]
    if repeated:
        raise AlignmentError(f"repeated symbol{'s' if len(repeated) > 1 else ''} {'; '.join(repeated)}: "
                             "each column of a panel needs its own series",
                             symbols=[b.symbol for b in loaded], ranges={b.symbol: timestamp_range(b.timestamps)
                                                                         for b in loaded})
    panel = align([bars.between(start, end) for bars in loaded], min_overlap=min_overlap)
    panel.meta.update(requested=list(symbols), start=start, end=end)
    return panel


def load_panel_dir(
    folder: str | Path,
    *,
    pattern: str = "*.csv",
    max_gap_days: int | None = None,
    start: str | None = None,
    end: str | None = None,
    min_overlap: int = 30,
    price_column: str | None = None,
) -> Panel:
    """Load every data file in ``folder`` matching ``pattern`` (one symbol per file) and align them.

    The symbol of each file is its name without the data suffix (``AAPL.csv.gz`` -> ``AAPL``);
    columns follow the sorted file names. Files matching ``pattern`` without a data suffix
    (``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``) are skipped and listed in ``meta["skipped"]``.
    Use ``pattern="*.parquet"`` for Parquet files, ``"*"`` for every data file.

    Args:
        folder: The folder (not searched recursively).
        pattern: Glob pattern of the file names to load.
        max_gap_days: Gap tolerance of each file (None: no gap check).
        start: Keep dates on or after this ISO date before aligning.
        end: Keep dates on or before this ISO date before aligning.
        min_overlap: Fewest common dates accepted.
        price_column: Read close-only files from this column (as :func:`~quantcrew.data.loaders.load_csv`).

    Returns:
        The aligned panel; ``meta["folder"]`` and ``meta["pattern"]`` say where it came from.

    Raises:
        DataError: the folder does not exist, no data file matches, or a file does not load.
        AlignmentError: two files share a stem, or the files overlap on too few dates.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(root, "no such folder" if not root.exists() else "not a folder")
    matches = sorted(p for p in root.glob(pattern) if p.is_file())
    files = [p for p in matches if p.name.lower().endswith(SUFFIXES)]
    skipped = [p.name for p in matches if p not in files]
    if not files:
        present = sorted(p.name for p in root.iterdir() if p.is_file())
        raise DataError(root, f"no data file matches {pattern!r} (data files end in {', '.join(SUFFIXES)}); "
                              f"files present: {', '.join(present) or 'none'}")
    loaded = [load_file(p, max_gap_days=max_gap_days, price_column=price_column) for p in files]
    panel = align([bars.between(start, end) for bars in loaded], min_overlap=min_overlap)
    panel.meta.update(folder=str(root), pattern=pattern, skipped=skipped, start=start, end=end)
    return panel
