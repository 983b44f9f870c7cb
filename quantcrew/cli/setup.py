"""``quantcrew setup``: train everything the crew consults, once per symbol and data span, with progress bars."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from quantcrew.cli.common import ConfigOpt, check_symbols, console, err_console, load_cli_settings, ml_server
from quantcrew.cli.exits import ExitCode, exit_for_error, fail

__all__ = ["setup"]

_DEFAULT_BUDGET_MIN = 10.0


def setup(
    symbols: Annotated[str, typer.Option("--symbols", "--symbol", help="Comma-separated symbols to train for.")]
    = "SP500,NASDAQ",
    end_date: Annotated[str | None, typer.Option(help="Train on bars up to this date (YYYY-MM-DD); default: all.")]
    = None,
    timesteps: Annotated[int | None, typer.Option(min=1, help="RL steps per run (each agent: 3 seeds x 2 reward "
                                                                  "scales; default 8,192).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Ensemble: most epochs per fit (default 12).")] = None,
    budget_minutes: Annotated[float, typer.Option(
        "--budget-minutes", min=0.1, help="Wall-clock budget for all jobs; a job still running at the end is "
                                          "cancelled (models already trained stay).")] = _DEFAULT_BUDGET_MIN,
    force: Annotated[bool, typer.Option("--force", help="Retrain even what exists for this data, and restart the "
                                                        "bandit's learning from the new agents.")] = False,
    server_url: Annotated[str | None, typer.Option(help="ML server URL; default: the home's server, or start one.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the jobs as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Train the four RL agents, the ensemble with its execution network, and warm-start the bandit, per symbol.

    Each model is judged by its quality gate on bars it was not trained on; one that fails is kept
    but not used (a named rule answers in its place). Exit codes: 0 all trained or already there,
    1 a job failed, 2 bad input, 3 the budget ran out first, 5 API key refused, 6 server unreachable,
    130 Ctrl-C.
    """
    from quantcrew.crew.server_process import ServerStartError
    from quantcrew.crew.training import SetupDefaults, plan_jobs
    from quantcrew.data import load_symbol
    from quantcrew.tools.arguments import ToolInputError, iso_date, parse_names
    from quantcrew.tools.client import make_client
    from quantcrew.tools.errors import MLClientError

    settings = load_cli_settings(config, client__url=server_url)
    try:
        names = parse_names(symbols, field="symbols")
        end = iso_date(end_date)
    except (ToolInputError, ValueError) as exc:
        fail(err_console, str(exc), ExitCode.BAD_INPUT)
    check_symbols(names, settings, end)
    bars_by_symbol = {}
    for name in names:
        bars = load_symbol(name, data_dir=settings.data.data_dir, max_gap_days=settings.data.max_gap_days)
        bars_by_symbol[bars.symbol] = bars.between(None, end) if end else bars
    base = SetupDefaults()
    defaults = SetupDefaults(timesteps=timesteps or base.timesteps, epochs=epochs or base.epochs)
    try:  # too few bars or an invalid request: refused before a server starts
        plan_jobs(bars_by_symbol, [], defaults=defaults)
    except ValueError as exc:
        fail(err_console, str(exc), ExitCode.BAD_INPUT)
    try:
        with ml_server(settings, config), make_client(settings.client) as client:
            jobs = plan_jobs(bars_by_symbol, client.list_models(), defaults=defaults, force=force)
            report = _run_with_bars(client, jobs, bars_by_symbol, budget_minutes * 60.0, force, quiet=as_json)
    except (MLClientError, ServerStartError) as exc:
        fail(err_console, str(exc), exit_for_error(exc))
    if as_json:
        console.print_json(json.dumps({"ok": report.ok, "seconds": report.seconds, "jobs": [
            {"symbol": j.symbol, "job": j.kind, "status": j.status, "job_id": j.job_id, "seconds": j.seconds,
             "detail": j.detail, "models": j.models, "result": j.result} for j in report.jobs]}, default=str))
    else:
        _print_report(report)
    if not report.ok:
        failed = any(j.status in ("failed", "cancelled") for j in report.jobs)
        raise typer.Exit(ExitCode.INTERRUPTED if report.interrupted else ExitCode.FAILED if failed
                         else ExitCode.BUDGET_EXCEEDED)


def _run_with_bars(client: Any, jobs: list[Any], bars_by_symbol: dict[str, Any], budget_s: float, force: bool,
                   *, quiet: bool) -> Any:
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from quantcrew.crew.training import run_plan
    from quantcrew.ml_server.schemas.jobs import JobInfo

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TextColumn("{task.fields[note]}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, disable=quiet) as bars:
        tasks: dict[int, TaskID] = {}
        for job in jobs:
            tasks[id(job)] = bars.add_task(f"{job.symbol} {job.label}", total=1, note=job.status, start=False)

        def show(job: Any, info: JobInfo | None) -> None:
            task = tasks[id(job)]
            if info is None or job.status in ("skipped", "out_of_budget", "failed", "cancelled", "succeeded"):
                done = job.status in ("skipped", "succeeded")
                bars.update(task, completed=1 if done else 0, total=1, note=job.status.replace("_", " "))
                return
            bars.start_task(task)
            metrics = info.progress.metrics
            note = info.progress.message or info.status
            if "episode_reward" in metrics:
                note += f"  episode reward {metrics['episode_reward']:+.3g}"
            elif "val_loss" in metrics:
                note += f"  val loss {metrics['val_loss']:.4f}"
            bars.update(task, completed=info.progress.done, total=info.progress.total or 1, note=note)

        try:
            return run_plan(client, jobs, budget_s=budget_s, bars_by_symbol=bars_by_symbol, on_progress=show,
                            reset_bandit=force)
        except KeyboardInterrupt:
            bars.stop()
            err_console.print("[yellow]interrupted: the running job was cancelled; models trained before it are "
                              "kept and used[/yellow]")
            raise typer.Exit(ExitCode.INTERRUPTED) from None


def _print_report(report: Any) -> None:
    table = Table("symbol", "job", "status", "seconds", "what the gates said / detail",
                  title=f"quantcrew setup ({report.seconds:.0f} s)", show_lines=True)
    for j in report.jobs:
        style = {"succeeded": "green", "skipped": "dim", "failed": "red", "out_of_budget": "yellow",
                 "cancelled": "yellow"}.get(j.status, "")
        table.add_row(Text(j.symbol), Text(j.label), Text(j.status.replace("_", " "), style=style),
                      f"{j.seconds:.0f}", Text(j.detail))
    console.print(table)
    if report.ok:
        console.print("Ready: `quantcrew run` now decides with these models (a gated model is replaced by its "
                      "named rule, by design).")
    else:
        console.print("[yellow]Not everything was trained: run `quantcrew setup` again (finished models are kept "
                      "and skipped), or raise --budget-minutes.[/yellow]")
