"""``quantcrew runs list`` and ``quantcrew runs show``: the stored crew runs."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from quantcrew.cli.common import ConfigOpt, console, err_console, load_cli_settings
from quantcrew.cli.exits import ExitCode, fail

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings

__all__ = ["attach_outcomes", "runs_app"]

runs_app = typer.Typer(help="Inspect stored runs.", no_args_is_help=True)

_STATUS_STYLES = {"succeeded": "green", "degraded": "yellow", "auth_failed": "red", "failed": "red",
                  "budget_exceeded": "yellow", "interrupted": "yellow"}


@runs_app.command("list")
def runs_list(limit: Annotated[int, typer.Option(min=1)] = 20, config: ConfigOpt = None) -> None:
    """The latest runs."""
    from quantcrew.crew.runs import RunsStore

    settings = load_cli_settings(config)
    store = RunsStore(settings.runs_db)
    table = Table("run_id", "kind", "status", "started_at", "seconds", "LLM calls", "degraded", "gated", "inputs",
                  "error")
    for row in store.list_runs(limit):
        seconds = f"{row['duration_s']:.1f}" if row.get("duration_s") is not None else ""
        degraded, gated = ("" if row.get(f) is None else ("yes" if row[f] else "no") for f in ("degraded", "gated"))
        status = Text(row["status"], style=_STATUS_STYLES.get(row["status"], ""))
        table.add_row(row["run_id"], row["kind"], status, row["started_at"], seconds, str(row.get("llm_calls") or ""),
                      degraded, gated, Text(row["inputs"]), Text(row.get("error") or ""))
    store.close()
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: str, config: ConfigOpt = None) -> None:
    """One run with its tool calls, as JSON; each symbol's decision carries its outcome (or why it has none)."""
    from quantcrew.crew.runs import RunsStore

    settings = load_cli_settings(config)
    store = RunsStore(settings.runs_db)
    found = store.get_run(run_id)
    store.close()
    if found is None:
        fail(err_console, f"no run '{run_id}' in {settings.runs_db}", ExitCode.BAD_INPUT)
    outcomes = found.pop("outcomes", [])
    if found.get("decision"):
        attach_outcomes(found, outcomes, settings)
    console.print_json(json.dumps(found, default=str))


def attach_outcomes(run: dict[str, Any], outcomes: list[dict[str, Any]], settings: Settings) -> None:
    """Put each symbol's stored outcome beside its decision (``decision.decisions[i].outcome``); a decision
    without one says why: its outcome bar is not in the data yet, or it is and waits to be settled."""
    from quantcrew.crew.outcomes import bars_from_settings, outcome_of

    by_symbol = {o["symbol"]: o for o in outcomes}
    bars_for = bars_from_settings(settings)
    decision = run["decision"]
    for sd in decision.get("decisions") or []:
        stored = by_symbol.get(sd.get("symbol"))
        if stored is not None:
            sd["outcome"] = {k: stored[k] for k in ("outcome_date", "r", "decision_return", "agent", "agent_return",
                                                    "reward_status", "reward_error", "settled_at")}
            continue
        date = str(sd.get("as_of") or decision.get("as_of") or run["inputs"].get("end_date") or "?")[:10]
        try:
            found = outcome_of(decision, sd, bars_for(str(sd.get("symbol"))),
                               fallback_date=run["inputs"].get("end_date"))
        except Exception as exc:  # unreadable data or an undated decision: say so, show the rest
            sd["outcome"] = f"unknown: {exc}"
            continue
        sd["outcome"] = found if isinstance(found, str) else (
            f"not settled yet: its outcome bar {found['outcome_date']} (after {date}) is in the data; "
            "`quantcrew outcomes` or the next run settles it")
