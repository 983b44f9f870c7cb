"""``quantcrew run`` refuses bad input before any server starts (in process, with typer's CliRunner)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantcrew.cli import app
from quantcrew.crew.runs import RunsStore


@pytest.mark.parametrize(("args", "needle"), [
    (["--symbols", "SP500,NOPE"], "unknown symbol 'NOPE'; available: bundled samples: SP500, NASDAQ"),
    (["--end-date", "2030-01-01"], "outside the data of SP500"),
    (["--end-date", "yesterday"], "end_date must be YYYY-MM-DD"),
    (["--crew", "nope"], "--crew must be one of"),
    (["--process", "parallel"], "--process must be one of"),
    (["--weights", "0.7,0.7"], "sum to 1.4"),
])
def test_run_bad_input_exits_2_and_stores_nothing(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["run", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.stderr.split())
    assert "ML server started" not in result.output and result.exception is None or isinstance(
        result.exception, SystemExit)
    runs_db = Path(os.environ["QUANTCREW_HOME"]) / "runs.db"
    assert not runs_db.exists() or RunsStore(runs_db).list_runs() == []


def test_run_knows_the_crews_and_processes_of_the_crew_module() -> None:
    # `run` names them itself so that bad input is refused before CrewAI loads; they must not drift apart
    from quantcrew.cli.run import PROCESSES, RUN_CREWS
    from quantcrew.crew import crew

    assert set(RUN_CREWS) == set(crew.CREWS) - {"risk"}
    assert PROCESSES == crew.PROCESSES
