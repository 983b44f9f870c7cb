"""The ``quantcrew`` command line: set up models, run the crew, serve models, inspect runs, backtest, schedule.

Each command group lives in its own module; this one only assembles them, in the order
``quantcrew --help`` lists them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from quantcrew.cli.alerts import alerts_app
from quantcrew.cli.backtest import backtest_command
from quantcrew.cli.data import data_app
from quantcrew.cli.flow import flow_app
from quantcrew.cli.models import models_app
from quantcrew.cli.outcomes import outcomes
from quantcrew.cli.retrain import retrain_command, schedule_add_training
from quantcrew.cli.risk import risk
from quantcrew.cli.run import run
from quantcrew.cli.runs import runs_app
from quantcrew.cli.schedule import schedule_app, scheduler_command
from quantcrew.cli.server import server
from quantcrew.cli.setup import setup
from quantcrew.cli.train import train

__all__ = ["app", "main"]

app = typer.Typer(name="quantcrew", help="CrewAI agents for quantitative research, over the quantcrew ML server.",
                  no_args_is_help=True, add_completion=False)


def _version(value: bool) -> None:
    if value:
        from quantcrew import __version__

        typer.echo(f"quantcrew {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """CrewAI agents for quantitative research, over the quantcrew ML server."""


app.add_typer(runs_app, name="runs")
app.command()(setup)
app.command()(run)
app.command()(risk)
app.command()(train)
app.command()(outcomes)
app.command()(server)
app.command("backtest")(backtest_command)
app.add_typer(schedule_app, name="schedule")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.command("scheduler")(scheduler_command)
app.add_typer(alerts_app, name="alerts")
app.command("retrain")(retrain_command)
schedule_app.command("add-training")(schedule_add_training)
app.add_typer(flow_app, name="flow")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="quantcrew")
