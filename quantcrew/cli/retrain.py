"""``quantcrew retrain`` (one retraining check now) and ``quantcrew schedule add-training`` (on a schedule).

:mod:`quantcrew.cli.app` registers them::

    app.command("retrain")(retrain_command)
    schedule_app.command("add-training")(schedule_add_training)
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from quantcrew.cli.common import ConfigOpt, console, err_console, load_cli_settings, ml_server
from quantcrew.cli.exits import ExitCode

__all__ = ["retrain_command", "schedule_add_training"]

SymbolsOpt = Annotated[str, typer.Option("--symbols", "--symbol", help="Comma-separated symbols whose "
                                                                       "'ensemble-<symbol>' models are watched.")]
MetricOpt = Annotated[str, typer.Option(help="Live-quality metric watched: log_loss, brier, "
                                             "calibration_error (lower is better) or hit_rate, sharpe.")]
QualityOpt = Annotated[float | None, typer.Option(help="Retrain when the champion's judged live quality is past "
                                                       "this; default: quality never triggers.")]
RollbackOpt = Annotated[float | None, typer.Option(help="Roll a promoted champion back to the previous one when "
                                                        "its judged live quality is past this.")]
DriftOpt = Annotated[bool, typer.Option("--drift/--no-drift", help="Retrain when the recent bars have drifted.")]
AlwaysOpt = Annotated[bool, typer.Option(help="Retrain on every firing (the schedule itself is the trigger).")]
CooldownOpt = Annotated[float, typer.Option(min=0.0, help="Hours during which one cause cannot start a second "
                                                          "retraining.")]
HoldoutOpt = Annotated[int, typer.Option(min=10, help="Last bars kept out of training for the gate.")]
TrainBarsOpt = Annotated[int | None, typer.Option(min=100, help="Train the challenger on the most recent N bars "
                                                                "before the holdout only; default: all of them.")]
EpochsOpt = Annotated[int | None, typer.Option(min=1, help="Training epochs of the challenger (default: the "
                                                           "server's).")]
MembersOpt = Annotated[int | None, typer.Option(min=1, help="Ensemble members per architecture.")]


def _policy_inputs(symbols: str, metric: str, quality_limit: float | None, rollback_limit: float | None,
                   drift: bool, always: bool, cooldown_hours: float, holdout_bars: int, train_bars: int | None,
                   epochs: int | None, members: int | None) -> dict[str, Any]:
    from quantcrew.crew.retraining import RetrainPolicy
    from quantcrew.tools.arguments import parse_names

    train = {k: v for k, v in (("epochs", epochs), ("members", members)) if v is not None}
    inputs: dict[str, Any] = {
        "symbols": ",".join(parse_names(symbols, field="symbols")), "quality_metric": metric,
        "quality_limit": quality_limit, "rollback_limit": rollback_limit, "on_drift": drift, "always": always,
        "cooldown_s": cooldown_hours * 3600.0, "holdout_bars": holdout_bars, "train_bars": train_bars,
        "train": train}
    RetrainPolicy.from_inputs(inputs)  # refuse now what a firing would refuse later
    return inputs


def retrain_command(
    symbols: SymbolsOpt = "SP500",
    metric: MetricOpt = "log_loss",
    quality_limit: QualityOpt = None,
    rollback_limit: RollbackOpt = None,
    drift: DriftOpt = True,
    always: AlwaysOpt = False,
    cooldown_hours: CooldownOpt = 168.0,
    holdout_bars: HoldoutOpt = 120,
    train_bars: TrainBarsOpt = None,
    epochs: EpochsOpt = None,
    members: MembersOpt = None,
    server_url: Annotated[str | None, typer.Option(
        help="ML server URL; default: the home's running server, or one started locally.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the steps as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Check each symbol's ensemble now: roll back, retrain on drift or poor quality, gate, promote or reject.

    Exits 0 when every symbol was checked, 4 (degraded) when some failed, 1 when all did, 2 on bad input.
    """
    from quantcrew.crew.retrain_runner import run_policy
    from quantcrew.crew.retraining import RetrainPolicy
    from quantcrew.crew.server_process import ServerStartError
    from quantcrew.data import DataError
    from quantcrew.tools.arguments import ToolInputError

    settings = load_cli_settings(config, client__url=server_url)
    try:
        policy = RetrainPolicy.from_inputs(_policy_inputs(symbols, metric, quality_limit, rollback_limit, drift,
                                                          always, cooldown_hours, holdout_bars, train_bars, epochs,
                                                          members))
    except (ValueError, ToolInputError) as exc:
        err_console.print(f"[red]{escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc
    try:
        with ml_server(settings, config):
            firing = run_policy(settings, policy)
    except ServerStartError as exc:
        err_console.print(f"[red]the ML server did not start: {escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(ExitCode.FAILED) from exc
    except DataError as exc:
        err_console.print(f"[red]--symbols: {escape(str(exc))}[/red]", highlight=False)
        raise typer.Exit(ExitCode.BAD_INPUT) from exc
    if as_json:
        typer.echo(json.dumps(firing.as_dict(), indent=2, default=str))
    else:
        table = Table("symbol", "step", "cause", "model", "champion", "detail")
        for report in firing.reports:
            for e in report.events:
                table.add_row(e.symbol, e.step, e.cause or "", e.model_id or "", e.champion_id or "",
                              json.dumps(e.detail, default=str)[:200])
        console.print(table)
    if firing.status != "succeeded":
        err_console.print(f"[yellow]{firing.status}: {escape(firing.summary())}[/yellow]", highlight=False)
        raise typer.Exit(ExitCode.FAILED if firing.status == "failed" else ExitCode.DEGRADED)


def schedule_add_training(
    cron: Annotated[str | None, typer.Option(help="Crontab expression, local time; e.g. '0 23 * * 1-5'.")] = None,
    every_seconds: Annotated[int | None, typer.Option(min=1, help="Fire every N seconds instead of --cron.")]
    = None,
    symbols: SymbolsOpt = "SP500",
    metric: MetricOpt = "log_loss",
    quality_limit: QualityOpt = None,
    rollback_limit: RollbackOpt = None,
    drift: DriftOpt = True,
    always: AlwaysOpt = False,
    cooldown_hours: CooldownOpt = 168.0,
    holdout_bars: HoldoutOpt = 120,
    train_bars: TrainBarsOpt = None,
    epochs: EpochsOpt = None,
    members: MembersOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add a training schedule: each firing checks drift and live quality and retrains when a trigger holds."""
    from quantcrew.crew.cron import ScheduleError
    from quantcrew.crew.retraining import RETRAIN_KIND
    from quantcrew.crew.schedule import ScheduleStore
    from quantcrew.data import DataError, load_symbol
    from quantcrew.tools.arguments import ToolInputError

    def fail(message: str) -> typer.Exit:
        err_console.print(f"[red]{escape(message)}[/red]", highlight=False)
        return typer.Exit(ExitCode.BAD_INPUT)

    if (cron is None) == (every_seconds is None):
        raise fail("give exactly one of --cron or --every-seconds")
    settings = load_cli_settings(config)
    try:
        inputs = _policy_inputs(symbols, metric, quality_limit, rollback_limit, drift, always, cooldown_hours,
                                holdout_bars, train_bars, epochs, members)
        for name in inputs["symbols"].split(","):
            load_symbol(name, data_dir=settings.data.data_dir, max_gap_days=settings.data.max_gap_days)
    except DataError as exc:
        raise fail(f"--symbols: {exc}") from exc
    except (ValueError, ToolInputError) as exc:
        raise fail(str(exc)) from exc
    with ScheduleStore(settings.runs_db) as store:
        try:
            schedule = store.add(cron, RETRAIN_KIND, inputs, every_seconds=every_seconds)
        except ScheduleError as exc:
            raise fail(str(exc)) from exc
    console.print(f"training schedule [bold]{schedule.schedule_id}[/bold] added: {schedule.trigger_text}, "
                  f"inputs {escape(json.dumps(schedule.inputs))}", highlight=False)
    console.print("[dim]it runs while `quantcrew scheduler` is running[/dim]")
