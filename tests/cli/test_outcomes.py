"""``quantcrew outcomes``: settle stored decisions, reward the bandit once each, list what they earned."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from typer.testing import CliRunner

from quantcrew.cli.exits import ExitCode
from quantcrew.cli.outcomes import outcomes
from quantcrew.config.settings import load_settings
from quantcrew.crew.decision import DecisionInputs, SymbolInputs, decide
from quantcrew.crew.runs import RunsStore
from quantcrew.crew.server_process import LocalServer, free_port
from quantcrew.ml_server.schemas.bandit import BanditCreateRequest, BanditSelectRequest
from quantcrew.tools.client import make_client

runner = CliRunner()
app = typer.Typer()
app.command("outcomes")(outcomes)


@app.callback()
def _group() -> None:
    """A throwaway app: the command under its own name."""


def _store() -> RunsStore:
    return RunsStore(Path(os.environ["QUANTCREW_HOME"]) / "runs.db")


def _run(store: RunsStore, as_of: str, decision_id: str | None, symbol: str = "SP500") -> str:
    s = SymbolInputs(symbol=symbol, as_of=as_of, agent_targets={"aggressive": 1.0, "contrarian": -1.0},
                     chosen_agent="aggressive", decision_id=decision_id, size=0.5)
    run_id = store.start_run(kind="full", inputs={"symbols": symbol}, llm="planner", server_url=None)
    store.finish_run(run_id, status="succeeded", decision=decide(DecisionInputs(symbols=[s])).model_dump())
    return run_id


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_outcomes_with_the_server_down_are_stored_listed_and_wait_for_the_monitor() -> None:
    store = _store()
    run_id = _run(store, "2012-06-29", None)
    _run(store, "2018-12-31", None)  # its outcome bar is not in the data yet
    store.close()
    result = runner.invoke(app, ["outcomes", "--server-url", _dead_url()], env={"COLUMNS": "250"})
    assert result.exit_code == 4, result.output  # degraded: the monitor's copy could not be posted
    assert run_id in result.stdout and "2012-06-29" in result.stdout and "no_decision" in result.stdout
    assert "1 settled, 0 rewarded, 0 reward(s) pending, 1 decision(s) waiting" in result.stdout
    assert "1 outcome(s) wait for the next settle" in result.stderr
    allowed = runner.invoke(app, ["outcomes", "--server-url", _dead_url(), "--allow-degraded"])
    assert allowed.exit_code == 0, allowed.output


def test_outcomes_as_of_keeps_later_bars_out_and_json_reports_it() -> None:
    store = _store()
    _run(store, "2012-06-29", None)
    store.close()
    result = runner.invoke(app, ["outcomes", "--as-of", "2012-06-30", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["report"]["settled"], shown["report"]["waiting"], shown["outcomes"]) == (0, 1, [])
    result = runner.invoke(app, ["outcomes", "--as-of", "2012-07-02", "--json"])
    [row] = json.loads(result.stdout)["outcomes"]
    assert (row["decision_date"], row["outcome_date"]) == ("2012-06-29", "2012-07-02")


def test_outcomes_bad_as_of_exits_2() -> None:
    result = runner.invoke(app, ["outcomes", "--as-of", "June"])
    assert result.exit_code == 2 and "--end-date must be YYYY-MM-DD" in result.stderr


def test_outcomes_rewards_the_bandit_once_and_a_server_down_leaves_them_pending(
        live_server: LocalServer) -> None:
    settings = load_settings()
    settings.client.url = live_server.url
    with make_client(settings.client) as client:
        client.bandit_create(BanditCreateRequest(name="meta-orchestrator", policy="ucb1"))
        ids = [client.bandit_select(BanditSelectRequest(bandit="meta-orchestrator", regime="bull")).decision_id
               for _ in range(2)]
        store = _store()
        _run(store, "2012-06-29", ids[0])
        store.close()
        down = runner.invoke(app, ["outcomes", "--server-url", _dead_url(), "--json"])
        assert down.exit_code == ExitCode.DEGRADED and "DEGRADED: rewards or monitor outcomes not sent" in down.stderr
        assert [r["reward_status"] for r in json.loads(down.stdout)["outcomes"]] == ["pending"]
        accepted = runner.invoke(app, ["outcomes", "--server-url", _dead_url(), "--json", "--allow-degraded"])
        assert accepted.exit_code == 0 and "DEGRADED: rewards or monitor outcomes not sent" in accepted.stderr
        store = _store()
        _run(store, "2012-07-02", ids[1])
        store.close()
        result = runner.invoke(app, ["outcomes", "--server-url", live_server.url, "--json"])
        assert result.exit_code == 0, result.output
        shown = json.loads(result.stdout)
        assert (shown["report"]["settled"], shown["report"]["rewarded"], shown["report"]["pending"]) == (1, 2, 0)
        assert {r["reward_status"] for r in shown["outcomes"]} == {"rewarded"}
        assert shown["report"]["posted"] == 2 and shown["report"]["unposted"] == 0  # the monitor has both now
        assert len(client.monitor_outcomes_list().outcomes) == 2
        again = json.loads(runner.invoke(app, ["outcomes", "--server-url", live_server.url, "--json"]).stdout)
        assert (again["report"]["settled"], again["report"]["rewarded"]) == (0, 0)
        state = client.bandit_state("meta-orchestrator")
        assert {s.regime: s.pulls for s in state.regimes}["bull"] == 2
