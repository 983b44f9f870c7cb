"""``quantcrew setup`` refuses bad input before any server starts or job runs (exit 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantcrew.cli import app


@pytest.mark.parametrize(("args", "needle"), [
    (["--symbols", "SP500,NOPE"], "unknown symbol 'NOPE'"),
    (["--symbols", "SP500", "--end-date", "1999-12-31"], "setup needs at least 750"),
    (["--symbols", "SP500", "--end-date", "2030-01-01"], "outside the data of SP500"),
    (["--symbols", "SP500", "--end-date", "last week"], "end_date must be YYYY-MM-DD"),
    (["--symbols", "VIX", "--end-date", "2015-06-30"], "VIX: "),
])
def test_setup_bad_input_exits_2_before_a_server_starts(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["setup", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.stderr.split())
    home = Path(os.environ["QUANTCREW_HOME"])
    assert not (home / "server.lock").exists() and not (home / "registry.db").exists()
