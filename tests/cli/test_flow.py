"""``quantcrew flow run | resume | show``: the daily flow from the command line, its exit code its status's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from quantcrew.cli.exits import ExitCode
from quantcrew.cli.flow import flow_app
from quantcrew.crew.server_process import free_port
from tests.support.offline import isolate_crewai

runner = CliRunner()
app = typer.Typer()
app.add_typer(flow_app, name="flow")


@app.callback()
def _group() -> None:
    """A throwaway app: the group under its own name."""


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    monkeypatch.setenv("QUANTCREW_CLIENT__RETRIES", "0")
    return isolate_crewai(monkeypatch, tmp_path)


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_a_degraded_flow_exits_4_and_is_shown_and_resumed_by_its_id(refused: list[str]) -> None:
    url = _dead_url()
    ran = runner.invoke(app, ["flow", "run", "--symbols", "SP500", "--lookback", "300", "--end-date", "2012-06-29",
                              "--server-url", url, "--json"])
    assert ran.exit_code == ExitCode.DEGRADED, ran.output
    state = json.loads(ran.stdout)  # stdout is the JSON alone
    assert state["status"] == "degraded" and state["degraded_reasons"]
    assert [s["step"] for s in state["steps"]] == ["regime", "risk", "strategy", "decision", "outcomes"]
    assert f"flow {state['id']} is DEGRADED" in ran.stderr

    shown = runner.invoke(app, ["flow", "show", state["id"]])
    assert shown.exit_code == 0, shown.output
    assert f"daily flow {state['id']}: DEGRADED" in shown.stdout and "DEGRADED: the ML server at" in shown.stdout

    resumed = runner.invoke(app, ["flow", "resume", state["id"], "--server-url", url, "--allow-degraded", "--json"])
    assert resumed.exit_code == 0, resumed.output  # finished already: nothing runs again, the state is as kept
    again = json.loads(resumed.stdout)
    assert again["id"] == state["id"] and again["decision"] == state["decision"]
    assert again == state
    assert refused == []


@pytest.mark.parametrize(("args", "says"), [
    (["flow", "show", "no-such-flow"], "no flow 'no-such-flow'"),
    (["flow", "resume", "no-such-flow"], "no flow 'no-such-flow'"),
    (["flow", "run", "--end-date", "29/06/2012"], "end_date must be YYYY-MM-DD"),
    (["flow", "run", "--symbols", "SP500,NASDAQ", "--weights", "0.5"], "weights has 1 numbers for 2 symbols"),
    (["flow", "run", "--symbols", "NO_SUCH_SYMBOL_X"], "NO_SUCH_SYMBOL_X"),
])
def test_bad_input_exits_2_before_anything_runs(args: list[str], says: str) -> None:
    home = Path(os.environ["QUANTCREW_HOME"])
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert says in result.stderr
    assert not (home / "runs.db").exists() and not (home / "flows.db").exists()  # nothing ran, nothing was made
