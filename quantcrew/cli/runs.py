"""``quantcrew runs list`` and ``quantcrew runs show``: the stored crew runs."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from quantcrew.cli.common import ConfigOpt, console, err_console, load_cli_settings

__all__ = ["runs_app"]

runs_app = typer.Typer(help="Inspect stored runs.", no_args_is_help=True)


@runs_app.command("list")
def runs_list(limit: Annotated[int, typer.Option(min=1)] = 20, config: ConfigOpt = None) -> None:
    """The latest runs."""
    from quantcrew.crew.runs import RunsStore

    settings = load_cli_settings(config)
    store = RunsStore(settings.runs_db)
    table = Table("run_id", "kind", "status", "started_at", "seconds", "LLM calls", "degraded", "inputs", "error")
    for row in store.list_runs(limit):
        seconds = f"{row['duration_s']:.1f}" if row.get("duration_s") is not None else ""
        degraded = "" if row.get("degraded") is None else ("yes" if row["degraded"] else "no")
        table.add_row(row["run_id"], row["kind"], row["status"], row["started_at"], seconds,
                      str(row.get("llm_calls") or ""), degraded, row["inputs"], row.get("error") or "")
    store.close()
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: str, config: ConfigOpt = None) -> None:
    """One run with its tool calls, as JSON."""
    from quantcrew.crew.runs import RunsStore

    settings = load_cli_settings(config)
    store = RunsStore(settings.runs_db)
    found = store.get_run(run_id)
    store.close()
    if found is None:
        err_console.print(f"[red]no run '{run_id}' in {settings.runs_db}[/red]")
        raise typer.Exit(1)
    console.print_json(json.dumps(found, default=str))
