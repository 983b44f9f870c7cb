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


def test_runs_show_unknown_id_is_bad_input() -> None:
    result = runner.invoke(app, ["runs", "show", "nosuch"], env={"COLUMNS": "250"})
    assert result.exit_code == 2
    assert "no run 'nosuch'" in result.stderr


def test_runs_show_puts_each_symbols_outcome_beside_its_decision() -> None:
    from quantcrew.crew.decision import DecisionInputs, SymbolInputs, decide
    from quantcrew.crew.outcomes import settle
    from quantcrew.data.symbols import load_symbol

    symbols = [SymbolInputs(symbol="SP500", as_of="2012-06-29", agent_targets={"aggressive": 1.0},
                            chosen_agent="aggressive", size=0.5),
               SymbolInputs(symbol="NASDAQ", as_of="2018-12-31", agent_targets={"aggressive": -1.0},
                            chosen_agent="aggressive", size=0.5)]
    decision = decide(DecisionInputs(as_of="2018-12-31", symbols=symbols))
    store = _store()
    run_id = store.start_run(kind="full", inputs={"symbols": "SP500,NASDAQ"}, llm="quantcrew-planner",
                             server_url=None)
    store.finish_run(run_id, status="succeeded", decision=decision.model_dump(mode="json"))
    bars = {s: load_symbol(s) for s in ("SP500", "NASDAQ")}
    settle(store, bars.__getitem__)
    store.close()
    result = runner.invoke(app, ["runs", "show", run_id])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    sp500, nasdaq = shown["decision"]["decisions"]
    close = bars["SP500"].between("2012-06-29", "2012-07-02").close
    r = close[1] / close[0] - 1.0
    assert sp500["outcome"]["outcome_date"] == "2012-07-02"
    assert abs(sp500["outcome"]["r"] - r) < 1e-12 and abs(sp500["outcome"]["decision_return"] - 0.5 * r) < 1e-12
    assert sp500["outcome"]["reward_status"] == "no_decision"
    assert nasdaq["outcome"] == "pending: outcome bar after 2018-12-31 not in the data yet"
    assert "outcomes" not in shown


def test_runs_show_says_when_an_outcome_bar_is_known_but_not_settled_yet() -> None:
    from quantcrew.crew.decision import DecisionInputs, SymbolInputs, decide

    symbols = [SymbolInputs(symbol="SP500", as_of="2012-06-29", agent_targets={"balanced": 0.5},
                            chosen_agent="balanced")]
    store = _store()
    run_id = store.start_run(kind="full", inputs={"symbols": "SP500"}, llm="quantcrew-planner", server_url=None)
    store.finish_run(run_id, status="succeeded", decision=decide(DecisionInputs(symbols=symbols)).model_dump())
    store.close()
    result = runner.invoke(app, ["runs", "show", run_id])
    assert result.exit_code == 0, result.output
    [sp500] = json.loads(result.stdout)["decision"]["decisions"]
    assert sp500["outcome"].startswith("not settled yet: its outcome bar 2012-07-02 (after 2012-06-29) is in the "
                                       "data")
