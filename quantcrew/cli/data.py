"""``quantcrew data add``: append validated bars from a file to a symbol's series in the data folder.

The data folder is ``data.data_dir`` (``QUANTCREW_DATA__DATA_DIR``), or ``<home>/data`` when it is
not set. Exit codes: 0 appended (or nothing new), 2 bad input (a missing or unreadable file, a
bad column, a disagreeing overlap, a refused gap: nothing is written), 1 the file could not be
written (the old one is left as it was).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape

from quantcrew.cli.common import ConfigOpt, console, err_console, load_cli_settings

if TYPE_CHECKING:
    from quantcrew.data.append import AppendPlan

__all__ = ["data_add", "data_app"]

data_app = typer.Typer(help="Market data: append new bars to a symbol.", no_args_is_help=True)


@data_app.command("add")
def data_add(
    symbol: Annotated[str, typer.Argument(help="A bundled series (SP500, NASDAQ, VIX, CRUDE) or a data-folder "
                                               "symbol; a new name starts a new file.")],
    file: Annotated[Path, typer.Argument(help="CSV (.csv, .csv.gz) or Parquet (.parquet, .pq) file of bars: "
                                              "Date, Open, High, Low, Close[, Volume].")],
    allow_gap: Annotated[bool, typer.Option("--allow-gap", help="Append across a gap longer than "
                                                                "data.max_gap_days (it is still named).")] = False,
    price_column: Annotated[str | None, typer.Option(help="Read a close-only file from this column (for the "
                                                          "close-only series VIX and CRUDE).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check and report; write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as a JSON object.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Append the bars of FILE to SYMBOL in the data folder: overlapping bars must agree, gaps are named.

    Overlapping prices must agree within a relative 1e-6; volume is not compared (the stored bar is kept).
    """
    from quantcrew.data.append import AppendError, append_bars
    from quantcrew.data.errors import DataError

    settings = load_cli_settings(config)
    configured = settings.data.data_dir is not None
    folder = settings.data.data_dir if settings.data.data_dir is not None else settings.home / "data"
    try:
        plan = append_bars(symbol, file, data_dir=folder, max_gap_days=settings.data.max_gap_days,
                           allow_gap=allow_gap, price_column=price_column, dry_run=dry_run)
    except DataError as exc:
        _fail(str(exc), reason=exc.reason if isinstance(exc, AppendError) else "bad_file", as_json=as_json, code=2)
    except OSError as exc:
        _fail(f"could not write the data file ({exc}); the old file is unchanged", reason="write_failed",
              as_json=as_json, code=1)
    notes = list(plan.notes)
    if not configured:
        notes.append(f"data.data_dir is not set: the file is in {folder}; set data.data_dir "
                     f"(QUANTCREW_DATA__DATA_DIR={folder}) so that commands read it")
    if as_json:
        typer.echo(json.dumps({"ok": True, **plan.to_json(), "notes": notes, "dry_run": dry_run,
                               "data_dir": str(folder)}, indent=2))
        return
    _report(plan, notes, dry_run=dry_run)


def _report(plan: AppendPlan, notes: list[str], *, dry_run: bool) -> None:
    summary: dict[str, Any] = plan.to_json()
    name = escape(summary["symbol"])
    stored = summary["stored"]
    base = {"data_folder": f"the data-folder file {escape(stored['source'] or '')}", "bundled": "the bundled series",
            "new": "nothing (new series)"}[stored["base"]]
    console.print(f"{name}: stored {_bars(stored['bars'])} from {base}"
                  + (f", {stored['start']} to {stored['end']}" if stored["bars"] else ""), highlight=False)
    overlap = summary["overlap"]
    if overlap["bars"]:
        volume = (f"; volume differs on {overlap['volume_differs']} (stored volume kept)"
                  if overlap["volume_differs"] else "")
        console.print(f"overlap: {_bars(overlap['bars'])} ({overlap['start']} to {overlap['end']}) agree on "
                      f"{', '.join(overlap['checked'])} within {overlap['rtol']:g}{volume}", highlight=False)
    for gap in summary["gaps"]:
        console.print(f"[yellow]gap: {gap['days']:g} days between {gap['before']} and {gap['after']} "
                      f"(over max_gap_days={summary['max_gap_days']:g}; allowed by --allow-gap)[/yellow]",
                      highlight=False)
    added = summary["added"]
    span = summary["span"]
    if added["bars"] == 0:
        console.print(f"nothing to add: every bar of {escape(summary['input'])} is already stored", highlight=False)
    else:
        verb = "would add" if dry_run else "added"
        console.print(f"{verb} {_bars(added['bars'])} ({added['start']} to {added['end']}): {name} "
                      f"{'would span' if dry_run else 'now spans'} {span['start']} to {span['end']} "
                      f"({_bars(span['bars'])})", highlight=False)
        if plan.written:
            console.print(f"written to {escape(summary['file'])}", highlight=False)
        else:
            console.print(f"dry run: nothing written (would write {escape(summary['file'])})", highlight=False)
    for note in notes:
        console.print(f"[yellow]note: {escape(note)}[/yellow]", highlight=False)


def _bars(n: int) -> str:
    return f"{n} bar" if n == 1 else f"{n} bars"


def _fail(message: str, *, reason: str, as_json: bool, code: int) -> NoReturn:
    err_console.print(f"[red]{escape(message)}[/red]", highlight=False)
    if as_json:
        typer.echo(json.dumps({"ok": False, "reason": reason, "error": message}, indent=2))
    raise typer.Exit(code)
