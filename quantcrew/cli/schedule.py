"""``quantcrew schedule ...`` (add, list, remove, runs) and ``quantcrew scheduler`` (the long-lived runner).

:mod:`quantcrew.cli.app` registers them::

    app.add_typer(schedule_app, name="schedule")
    app.command("scheduler")(scheduler_command)
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from quantcrew.cli.common import ConfigOpt, console, err_console, load_cli_settings, ml_server
from quantcrew.cli.exits import ExitCode
from quantcrew.crew.scheduler import DEFAULT_GRACE_S, DEFAULT_RESYNC_S

if TYPE_CHECKING:
    from quantcrew.crew.schedule import ScheduleRun

__all__ = ["schedule_app", "scheduler_command"]

schedule_app = typer.Typer(help="Cron-like crew schedules: add, list, remove, and their firings.",
                           no_args_is_help=True)


def _fail(message: str, code: int = ExitCode.BAD_INPUT) -> typer.Exit:
    err_console.print(f"[red]{escape(message)}[/red]", highlight=False)
    return typer.Exit(code)


def _kickoff_inputs(kind: str, names: list[str], lookback: int | None, weights: str | None) -> dict[str, Any]:
    """The kickoff inputs to store for crew ``kind``: ``symbols`` (+ ``weights``, ``lookback`` when given).

    Raises:
        ValueError: an unknown kind (the message lists the known ones), several symbols for a
            one-symbol crew, weights for a crew without a portfolio, or bad weights.
    """
    from quantcrew.crew.crew import CREWS, required_inputs
    from quantcrew.tools.arguments import check_weights, parse_floats

    if kind not in CREWS:
        raise ValueError(f"--crew: no crew '{kind}'; defined: {', '.join(sorted(CREWS))}")
    spec = CREWS[kind]
    if "symbol" in spec.defaults and len(names) > 1:
        raise ValueError(f"--symbols: the '{kind}' crew analyses one symbol, got {len(names)}: {', '.join(names)}")
    inputs: dict[str, Any] = {"symbols": ",".join(names)}
    if weights is not None or "weights" in spec.defaults:  # the defaults' weights fit the default symbols only
        if "weights" not in required_inputs(*spec.tasks) | set(spec.defaults):
            raise ValueError(f"--weights: the '{kind}' crew takes no weights")
        parsed = check_weights(parse_floats(weights, field="weights"), len(names), normalize=False)
        inputs["weights"] = ",".join(f"{w:.6g}" for w in parsed)
    if lookback is not None:
        inputs["lookback"] = lookback
    return inputs


@schedule_app.command("add")
def schedule_add(
    cron: Annotated[str | None, typer.Option(help="Crontab expression (minute hour day month day-of-week), local "
                                                  "time; e.g. '0 22 * * 1-5' = 22:00 Monday-Friday.")] = None,
    every_seconds: Annotated[int | None, typer.Option(min=1, help="Fire every N seconds instead of --cron.")]
    = None,
    symbols: Annotated[str, typer.Option("--symbols", "--symbol",
                                         help="Comma-separated symbols: bundled series (SP500, NASDAQ, VIX, "
                                              "CRUDE), data-folder symbols or files.")] = "SP500",
    kind: Annotated[str, typer.Option("--crew", "--kind",
                                      help="Which crew runs (full, regime, risk, strategy, meta).")] = "full",
    lookback: Annotated[int | None, typer.Option(min=60, help="Daily bars to analyse; default: the crew's.")]
    = None,
    weights: Annotated[str | None, typer.Option(help="Portfolio weights, one per symbol (crews with a portfolio); "
                                                     "default: equal.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Add a schedule; a running `quantcrew scheduler` picks it up within seconds."""
    from quantcrew.crew.cron import ScheduleError, validate_trigger
    from quantcrew.crew.schedule import ScheduleStore
    from quantcrew.data import DataError, load_symbol
    from quantcrew.tools.arguments import ToolInputError, parse_names

    if (cron is None) == (every_seconds is None):
        raise _fail("give exactly one of --cron or --every-seconds")
    try:  # cheapest checks first; nothing is written until all pass
        validate_trigger(cron, every_seconds)
        names = parse_names(symbols, field="symbols")
    except (ScheduleError, ToolInputError) as exc:
        raise _fail(f"{'--cron' if cron is not None else '--every-seconds'}: {exc}"
                    if isinstance(exc, ScheduleError) else f"--{exc}") from exc
    settings = load_cli_settings(config)
    try:
        for name in names:
            load_symbol(name, data_dir=settings.data.data_dir, max_gap_days=settings.data.max_gap_days)
        inputs = _kickoff_inputs(kind, names, lookback, weights)
    except DataError as exc:
        raise _fail(f"--symbols: {exc}") from exc
    except ValueError as exc:  # ToolInputError included
        raise _fail(str(exc)) from exc
    with ScheduleStore(settings.runs_db) as store:
        try:
            schedule = store.add(cron, kind, inputs, every_seconds=every_seconds)
        except ScheduleError as exc:
            raise _fail(str(exc)) from exc
    console.print(f"schedule [bold]{schedule.schedule_id}[/bold] added: {schedule.kind} crew, "
                  f"{schedule.trigger_text}, inputs {json.dumps(schedule.inputs)}", highlight=False)
    console.print("[dim]it runs while `quantcrew scheduler` is running[/dim]")


@schedule_app.command("list")
def schedule_list(config: ConfigOpt = None) -> None:
    """Every schedule with its last firing."""
    from quantcrew.crew.schedule import ScheduleStore

    settings = load_cli_settings(config)
    with ScheduleStore(settings.runs_db) as store:
        schedules = store.list()
        last = {s.schedule_id: store.list_runs(s.schedule_id, limit=1) for s in schedules}
    if not schedules:
        console.print("no schedules; add one with `quantcrew schedule add --cron '0 22 * * 1-5' --symbols SP500`")
        return
    table = Table("schedule_id", "trigger", "kind", "inputs", "enabled", "created_at", "last firing")
    for s in schedules:
        previous = last[s.schedule_id]
        table.add_row(s.schedule_id, s.trigger_text, s.kind, json.dumps(s.inputs), "yes" if s.enabled else "no",
                      s.created_at[:19], f"{previous[0].status} {previous[0].started_at[:19]}" if previous else "")
    console.print(table)


@schedule_app.command("remove")
def schedule_remove(schedule_id: Annotated[str, typer.Argument(help="The id `schedule list` shows.")],
                    config: ConfigOpt = None) -> None:
    """Remove a schedule (its past firings stay listed by `schedule runs`)."""
    from quantcrew.crew.schedule import ScheduleNotFound, ScheduleStore

    settings = load_cli_settings(config)
    with ScheduleStore(settings.runs_db) as store:
        try:
            removed = store.remove(schedule_id)
        except ScheduleNotFound as exc:
            raise _fail(str(exc)) from exc
    console.print(f"schedule {removed.schedule_id} removed ({removed.kind}, {removed.trigger_text})",
                  highlight=False)


@schedule_app.command("runs")
def schedule_runs(
    schedule_id: Annotated[str | None, typer.Option(help="Only this schedule's firings.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many, newest first.")] = 20,
    config: ConfigOpt = None,
) -> None:
    """The latest firings: when, how long, how they ended, and the crew run they made."""
    from quantcrew.crew.schedule import ScheduleNotFound, ScheduleStore

    settings = load_cli_settings(config)
    with ScheduleStore(settings.runs_db) as store:
        rows = store.list_runs(schedule_id, limit=limit)
        if schedule_id is not None and not rows:
            try:
                store.get(schedule_id)  # a known schedule that has not fired yet is fine
            except ScheduleNotFound as exc:
                raise _fail(str(exc)) from exc
    table = Table("id", "schedule_id", "scheduled_for", "started_at", "seconds", "status", "run_id", "error")
    for r in rows:
        duration = r.duration_s
        table.add_row(str(r.id), r.schedule_id, r.scheduled_for[:19], r.started_at[:19],
                      "" if duration is None else f"{duration:.1f}", _status(r.status), r.run_id or "",
                      r.error or "")
    console.print(table)
    if rows:
        console.print(f"crew runs: `quantcrew runs show RUN_ID`; store: {settings.runs_db}", style="dim",
                      markup=False)


def _status(status: str) -> str:
    colour = {"succeeded": "green", "degraded": "yellow", "failed": "red", "skipped": "yellow"}.get(status)
    return f"[{colour}]{status}[/{colour}]" if colour else status


def scheduler_command(
    server_url: Annotated[str | None, typer.Option(help="ML server URL; default: start one locally for as long "
                                                        "as the scheduler runs.")] = None,
    grace_seconds: Annotated[int, typer.Option(min=1, help="Misfire grace window: a fire time missed by less than "
                                                           "this still runs, once.")] = DEFAULT_GRACE_S,
    resync_seconds: Annotated[float, typer.Option(min=0.1, help="How often to re-read the schedules.")]
    = DEFAULT_RESYNC_S,
    stop_timeout: Annotated[float | None, typer.Option(min=0.0, help="On SIGTERM/Ctrl-C, the most seconds to wait "
                                                                     "for a run in flight; default: until it "
                                                                     "ends.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the stored schedules until SIGTERM or Ctrl-C (a run in flight is finished and recorded first)."""
    from quantcrew.crew.schedule import ScheduleStore
    from quantcrew.crew.scheduler import Scheduler
    from quantcrew.crew.server_process import ServerStartError

    settings = load_cli_settings(config, client__url=server_url)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = ScheduleStore(settings.runs_db)
    try:
        with ml_server(settings, config):
            scheduler = Scheduler(settings, store=store, grace_s=grace_seconds, resync_s=resync_seconds,
                                  stop_timeout_s=stop_timeout, on_run=_print_run)
            scheduler.start()
            count = len(scheduler.schedules)
            console.print(f"scheduler running {count} schedule{'s' if count != 1 else ''} from {settings.runs_db}"
                          + ("" if count else "; add one with `quantcrew schedule add`")
                          + "; SIGTERM or Ctrl-C stops it", highlight=False)
            scheduler.run_forever()
            console.print("scheduler stopped; every firing is recorded")
    except ServerStartError as exc:
        raise _fail(str(exc), code=ExitCode.FAILED) from exc
    finally:
        store.close()


def _print_run(row: ScheduleRun) -> None:
    duration = row.duration_s
    took = "" if duration is None or row.status == "skipped" else f" in {duration:.1f} s"
    detail = f" run {row.run_id}" if row.run_id else ""
    detail += f": {row.error}" if row.error else ""
    console.print(f"{row.started_at[:19]} schedule {row.schedule_id} {_status(row.status)}{took}{detail}",
                  highlight=False)
