"""``quantcrew run`` (in process, with typer's CliRunner): bad input refused before any server starts, and a
run that tells the truth: a refused key, an unreachable or dying server are never a silent success."""

from __future__ import annotations

import json
import os
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quantcrew.cli import app
from quantcrew.cli.common import console
from quantcrew.cli.exits import ExitCode
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.server_process import LocalServer, free_port
from tests.support.servers import CHILD_SERVER_ENV


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


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A real server that requires the API key ``right-key``."""
    home = Path(tmp_path_factory.mktemp("keyed-home"))
    server = LocalServer(env={"QUANTCREW_HOME": str(home), "QUANTCREW_SERVER__API_KEY": "right-key",
                              **CHILD_SERVER_ENV}, log_path=home / "server.log")
    with server:
        yield server


def _stored(run_id_text: str) -> dict[str, Any]:
    store = RunsStore(Path(os.environ["QUANTCREW_HOME"]) / "runs.db")
    [row] = store.list_runs()
    found = store.get_run(row["run_id"])
    store.close()
    assert found is not None and found["run_id"] in run_id_text
    return found


@pytest.mark.parametrize("key", ["wrong-key", None])
def test_a_refused_api_key_exits_5_names_the_cause_and_stores_auth_failed(keyed_server: LocalServer,
                                                                         key: str | None) -> None:
    env = {"COLUMNS": "200", "QUANTCREW_CLIENT__API_KEY": key}
    result = CliRunner().invoke(app, ["run", "--crew", "regime", "--symbols", "SP500", "--lookback", "300",
                                      "--server-url", keyed_server.url], env=env)
    assert result.exit_code == ExitCode.AUTH_REFUSED, result.output
    said = " ".join(result.stderr.split())
    assert f"the ML server at {keyed_server.url} refused the API key" in said and "QUANTCREW_CLIENT__API_KEY" in said
    assert "Regime report" not in result.stdout  # no silent decision or report
    stored = _stored(said)
    assert (stored["status"], stored["decision"], stored["tool_calls"]) == ("auth_failed", None, [])


def test_the_right_api_key_runs(keyed_server: LocalServer) -> None:
    result = CliRunner().invoke(app, ["run", "--crew", "regime", "--symbols", "SP500", "--lookback", "300",
                                      "--server-url", keyed_server.url, "--json"],
                                env={"QUANTCREW_CLIENT__API_KEY": "right-key"})
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["status"], shown["degraded"]) == ("succeeded", False)
    assert _stored(shown["run_id"])["status"] == "succeeded"


def test_an_unreachable_server_makes_a_degraded_run_that_exits_4_unless_allowed() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    args = ["run", "--crew", "regime", "--symbols", "SP500", "--lookback", "300", "--server-url", dead]
    env = {"COLUMNS": "200", "QUANTCREW_CLIENT__RETRIES": "0"}
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == ExitCode.DEGRADED, result.output
    assert "DEGRADED" in result.stdout and f"the ML server at {dead} did not answer" in result.stdout
    assert "is DEGRADED (exit 4; --allow-degraded accepts it)" in " ".join(result.stderr.split())
    assert _stored(result.stdout)["status"] == "degraded"
    accepted = CliRunner().invoke(app, [*args, "--allow-degraded", "--json"], env=env)
    assert accepted.exit_code == 0, accepted.output
    shown = json.loads(accepted.stdout)
    assert (shown["status"], shown["degraded"]) == ("degraded", True)


def test_a_server_that_dies_mid_run_makes_the_run_degraded(tmp_path: Path) -> None:
    from quantcrew.config.settings import load_settings
    from quantcrew.crew.kickoff import run as kickoff
    from quantcrew.tools.base import ToolResult

    server = LocalServer(env={"QUANTCREW_HOME": str(tmp_path), **CHILD_SERVER_ENV}, log_path=tmp_path / "server.log")
    server.start()
    settings = load_settings()
    settings.client.url, settings.client.retries = server.url, 0
    seen: list[ToolResult] = []

    def kill_after_first(result: ToolResult) -> None:
        seen.append(result)
        if len(seen) == 1:
            server.stop()

    try:
        outcome = kickoff({"symbols": "SP500,NASDAQ", "lookback": 300}, settings, kind="full",
                          on_tool_result=kill_after_first)
    finally:
        server.stop()
    assert not seen[0].degraded and any(r.degraded for r in seen[1:])
    assert outcome.status == "degraded" and outcome.decision is not None
    stored = _stored(outcome.run_id)
    assert (stored["status"], stored["degraded"]) == ("degraded", True)


def test_a_file_symbol_path_is_printed_as_text_not_markup(tmp_path: Path) -> None:
    # a path in brackets ("tool[/path/MY.csv]") was read as a closing markup tag and crashed the report
    from quantcrew.cli.run import print_decision
    from quantcrew.crew.decision import DecisionInputs, SymbolInputs, decide

    path = str(tmp_path / "[red]MY.csv")
    decision = decide(DecisionInputs(symbols=[SymbolInputs(symbol=path, as_of="2020-01-02",
                                                           agent_targets={"balanced": 0.5},
                                                           chosen_agent="balanced", size=0.5)]))
    outcome = types.SimpleNamespace(decision=decision, views={}, degraded_notes=[f"regime_detection[{path}]: down"],
                                    settled=None, llm_calls=0, duration_s=0.1)
    with console.capture() as captured:
        print_decision(outcome, "Decision")
    text = captured.get()
    assert path in text and f"DEGRADED: regime_detection[{path}]: down" in text


def test_an_llm_url_that_does_not_answer_is_named_before_the_crew_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm_url = f"http://127.0.0.1:{free_port()}/v1"
    result = CliRunner().invoke(app, ["run", "--crew", "regime", "--symbols", "SP500", "--lookback", "300",
                                      "--llm", "openai/my-model", "--llm-base-url", llm_url,
                                      "--server-url", f"http://127.0.0.1:{free_port()}"],
                                env={"COLUMNS": "200", "QUANTCREW_CLIENT__RETRIES": "0"})
    assert result.exit_code == ExitCode.FAILED, result.output
    said = " ".join(result.stderr.split())
    assert f"the LLM server at {llm_url} (crew.llm_base_url, --llm-base-url) did not answer" in said
    assert "OPENAI_API_KEY" not in said
    assert _stored(said)["status"] == "failed"


def test_a_file_symbol_keeps_its_case_for_every_tool(tmp_path: Path) -> None:
    # the decision step upper-cased the names it passed on, so the execution plan could not find "My.csv"
    from quantcrew.data import load_symbol

    bars = load_symbol("SP500")
    path = tmp_path / "Data" / "My.csv"
    path.parent.mkdir()
    rows = zip(bars.timestamps[-400:], bars.open[-400:], bars.high[-400:], bars.low[-400:], bars.close[-400:],
               strict=True)
    path.write_text("Date,Open,High,Low,Close\n" + "".join(f"{str(t)[:10]},{o},{h},{lo},{c}\n"
                                                           for t, o, h, lo, c in rows))
    result = CliRunner().invoke(app, ["run", "--symbols", str(path), "--lookback", "300", "--allow-degraded",
                                      "--json", "--server-url", f"http://127.0.0.1:{free_port()}"],
                                env={"QUANTCREW_CLIENT__RETRIES": "0"})
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert [n for n in shown["degraded_notes"] if "could not answer" in n] == []
    assert {r["tool"] for r in shown["tool_results"] if r["ok"]} >= {"execution_plan", "portfolio_decision"}
