"""``quantcrew outcomes``: settle the stored decisions whose outcome bar is known, reward the bandit once for
each, and list what the decisions earned."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from quantcrew.cli.common import AllowDegradedOpt, ConfigOpt, console, err_console, load_cli_settings, ml_server
from quantcrew.cli.exits import ExitCode, fail

__all__ = ["outcomes", "outcomes_table"]


def outcomes(
    as_of: Annotated[str | None, typer.Option(
        "--end-date", "--as-of", help="Use only outcome bars on or before this date (YYYY-MM-DD); default: every "
                                      "bar in the data.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Settled decisions to list, newest first.")] = 20,
    server_url: Annotated[str | None, typer.Option(
        help="ML server URL for the bandit's rewards; default: the home's running server, or one started "
             "locally (only when there are rewards to send).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was settled and the outcomes as JSON.")]
    = False,
    allow_degraded: AllowDegradedOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Settle stored decisions: the realised return of the bar after each decision, stored once, and the bandit
    rewarded once for the agent it chose. Lists the settled decisions."""
    from quantcrew.crew.outcomes import (
        bandit_rewarder,
        bars_from_settings,
        monitor_poster,
        post_outcomes,
        record_outcomes,
        send_rewards,
    )
    from quantcrew.crew.runs import RunsStore
    from quantcrew.crew.server_process import ServerStartError
    from quantcrew.tools.arguments import iso_date
    from quantcrew.tools.client import make_client

    settings = load_cli_settings(config, client__url=server_url)
    try:
        bound = iso_date(as_of, field="--end-date")
    except ValueError as exc:
        fail(err_console, str(exc), ExitCode.BAD_INPUT)
    bound = bound[:10] if bound is not None else None
    store = RunsStore(settings.runs_db)
    try:
        report = record_outcomes(store, bars_from_settings(settings), as_of=bound)
        # the server is needed only when there are rewards to send or outcomes its monitor has not taken
        if store.pending_rewards(bound) or store.unposted_count(bound):
            try:
                with ml_server(settings, config), make_client(settings.client) as client:
                    send_rewards(store, bandit_rewarder(client), as_of=bound, report=report)
                    post_outcomes(store, monitor_poster(client), as_of=bound, report=report)
            except ServerStartError as exc:
                report.server_error = f"the ML server did not start: {exc}"
                report.unposted = store.unposted_count(bound)
        report.pending = store.pending_rewards(bound)
        rows = store.outcomes(limit=limit)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted; what was settled is kept, pending rewards wait for the next "
                          "settle[/yellow]")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    finally:
        store.close()
    if as_json:
        console.print_json(json.dumps({"report": report.model_dump(mode="json"), "outcomes": rows}, default=str))
    else:
        console.print(outcomes_table(rows, title=f"Settled decisions (newest {limit})"))
        console.print(report.summary())
        for line in report.errors:
            err_console.print(line, style="yellow", markup=False)
    if report.server_error is not None or report.monitor_error is not None:
        # the outcomes are stored; only the bandit's rewards and the monitor's copies wait: degraded, not failed
        why = report.server_error or report.monitor_error
        err_console.print(f"DEGRADED: rewards or monitor outcomes not sent: {why}; {report.pending} reward(s) and "
                          f"{report.unposted} outcome(s) wait for the next settle",
                          style="yellow" if allow_degraded else "red", markup=False)
        if not allow_degraded:
            raise typer.Exit(ExitCode.DEGRADED)


def outcomes_table(rows: list[dict[str, Any]], *, title: str) -> Table:
    """Outcome rows as a table: run, symbol, date, target, r, decision return, agent, reward status."""
    table = Table("run", "symbol", "date", "outcome bar", "target", "r", "decision return", "agent",
                  "agent return", "reward", title=title)
    for row in rows:
        reward = row["reward_status"] + (f" ({row['reward_error']})" if row.get("reward_error") else "")
        agent_return = f"{row['agent_return']:+.4%}" if row.get("agent_return") is not None else ""
        table.add_row(row["run_id"], row["symbol"], row["decision_date"], row["outcome_date"],
                      f"{row['target']:+.2f}", f"{row['r']:+.4%}", f"{row['decision_return']:+.4%}",
                      row.get("agent") or "", agent_return, reward)
    return table
