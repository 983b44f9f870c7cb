"""The assembled ``quantcrew`` app: every command group, in ``--help`` order."""

from __future__ import annotations

import subprocess
import sys

import typer
from typer.testing import CliRunner

from quantcrew.cli import app, main

COMMANDS = ["setup", "run", "risk", "train", "outcomes", "server", "backtest", "scheduler", "runs", "schedule", "data"]


def test_app_registers_every_command_group_in_help_order() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    assert group.list_commands(None) == COMMANDS  # type: ignore[arg-type]


def test_no_arguments_prints_help() -> None:
    result = CliRunner().invoke(app, [], env={"COLUMNS": "200"})
    assert result.exit_code in (0, 2)  # click's no_args_is_help exit code changed across versions
    assert all(name in result.output for name in COMMANDS)


def test_python_dash_m_runs_the_same_app() -> None:
    assert callable(main)
    proc = subprocess.run([sys.executable, "-m", "quantcrew.cli", "runs", "--help"], capture_output=True,
                          text=True, timeout=60, env={"COLUMNS": "200", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert "Inspect stored runs." in proc.stdout


def test_version_prints_the_package_version_and_exits_0() -> None:
    from quantcrew import __version__

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"quantcrew {__version__}"
