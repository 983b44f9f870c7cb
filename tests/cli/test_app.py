"""The assembled ``quantcrew`` app: every command group, in ``--help`` order."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import typer
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from quantcrew.cli import app, main

COMMANDS = ["setup", "run", "risk", "train", "outcomes", "server", "backtest", "scheduler", "retrain", "runs",
            "schedule", "data", "models", "alerts", "flow"]


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


def _options(command: Any) -> dict[str, list[str]]:
    return {p.name: list(p.opts) for p in command.params if isinstance(p, TyperOption) and p.name}


def _commands() -> dict[str, Any]:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    found: dict[str, Any] = {}
    for name, command in root.commands.items():
        if isinstance(command, TyperGroup):
            found.update({f"{name} {sub}": c for sub, c in command.commands.items()})
        else:
            found[name] = command
    return found


def test_every_command_spells_symbols_and_dates_the_same_way() -> None:
    checked = []
    for name, command in _commands().items():
        for param, opts in _options(command).items():
            if param in ("symbols", "symbol"):
                assert opts[0] == "--symbols" and "--symbol" in opts, (name, opts)
                checked.append(name)
            if param in ("end_date", "as_of", "end"):
                assert opts[0] == "--end-date", (name, opts)
            if param == "start":
                assert opts[0] == "--start-date", (name, opts)
            if param == "kind" or param == "crew":
                assert opts[0] == "--crew", (name, opts)
    assert set(checked) >= {"setup", "run", "risk", "train", "backtest", "schedule add"}


def test_commands_whose_run_can_end_degraded_take_allow_degraded() -> None:
    commands = _commands()
    for name in ("run", "risk", "outcomes"):
        assert ["--allow-degraded"] in _options(commands[name]).values(), name
