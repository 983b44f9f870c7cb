"""``quantcrew runs list`` / ``runs show``: the stored runs, from the settings' runs store."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from quantcrew.cli import app
from quantcrew.crew.runs import RunsStore

runner = CliRunner()


def _store() -> RunsStore:
    return RunsStore(Path(os.environ["QUANTCREW_HOME"]) / "runs.db")


def test_runs_list_shows_the_latest_runs() -> None:
    store = _store()
    run_id = store.start_run(kind="regime", inputs={"symbol": "SP500"}, llm="quantcrew-planner", server_url=None)
    store.finish_run(run_id, status="succeeded", output="ok", llm_calls=3, duration_s=1.25, degraded=False)
    store.close()
    result = runner.invoke(app, ["runs", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert run_id in result.stdout and "succeeded" in result.stdout and "1.2" in result.stdout


def test_runs_show_prints_the_run_as_json() -> None:
    store = _store()
    run_id = store.start_run(kind="risk", inputs={"symbols": "SP500"}, llm="quantcrew-planner", server_url=None)
    store.close()
    result = runner.invoke(app, ["runs", "show", run_id])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == "risk"


def test_runs_show_unknown_id_exits_1() -> None:
    result = runner.invoke(app, ["runs", "show", "nosuch"], env={"COLUMNS": "250"})
    assert result.exit_code == 1
    assert "no run 'nosuch'" in result.stderr
