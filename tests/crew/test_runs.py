"""The runs store: runs and tool calls in one SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from quantcrew.crew.runs import RunsStore
from quantcrew.tools import ToolResult


def test_run_with_tool_calls_round_trips(tmp_path: Path) -> None:
    store = RunsStore(tmp_path / "runs.db")
    run_id = store.start_run(kind="regime", inputs={"symbol": "SP500"}, llm="planner", server_url=None)
    store.record_tool_call(run_id, ToolResult(tool="regime_detection", ok=True, summary="bull",
                                              arguments={"symbol": "SP500"}, data={"current_label": "bull"}))
    store.finish_run(run_id, status="succeeded", output="report")
    run = store.get_run(run_id)
    assert run is not None
    assert run["status"] == "succeeded" and run["output"] == "report"
    assert run["inputs"] == {"symbol": "SP500"}
    assert run["tool_calls"][0]["data"] == {"current_label": "bull"}
    assert store.list_runs()[0]["run_id"] == run_id
    assert store.get_run("missing") is None


def test_store_uses_wal_mode(tmp_path: Path) -> None:
    RunsStore(tmp_path / "runs.db").close()
    mode = sqlite3.connect(tmp_path / "runs.db").execute("pragma journal_mode").fetchone()[0]
    assert mode == "wal"


def test_finish_run_stores_decision_degraded_and_budget(tmp_path: Path) -> None:
    store = RunsStore(tmp_path / "runs.db")
    run_id = store.start_run(kind="full", inputs={"symbols": "SP500"}, llm="planner", server_url=None,
                             budget="60 LLM calls, 600 s")
    store.finish_run(run_id, status="budget_exceeded", error="LLM-call budget of 60 exhausted",
                     decision={"decisions": []}, degraded=True, llm_calls=60, duration_s=1.5)
    run = store.get_run(run_id)
    assert run is not None
    assert (run["status"], run["decision"], run["degraded"], run["llm_calls"], run["budget"]) == (
        "budget_exceeded", {"decisions": []}, True, 60, "60 LLM calls, 600 s")


def test_finish_run_unknown_status_is_refused(tmp_path: Path) -> None:
    import pytest

    store = RunsStore(tmp_path / "runs.db")
    run_id = store.start_run(kind="full", inputs={}, llm="planner", server_url=None)
    with pytest.raises(ValueError, match="status must be one of"):
        store.finish_run(run_id, status="done")


def test_store_adds_new_columns_to_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    conn = sqlite3.connect(path)
    conn.execute("create table runs (run_id text primary key, kind text, status text, started_at text, "
                 "finished_at text, inputs text, llm text, server_url text, output text, error text)")
    conn.execute("insert into runs values ('old', 'regime', 'succeeded', '2026-01-01', null, '{}', 'p', null, "
                 "'x', null)")
    conn.commit()
    conn.close()
    store = RunsStore(path)
    run = store.get_run("old")
    assert run is not None and run["decision"] is None and run["degraded"] is None


# The schema of the previous version, as that version created it (captured from a fresh store).
_PREVIOUS_SCHEMA = """
CREATE TABLE "runs" (
   "run_id" TEXT PRIMARY KEY,
   "kind" TEXT,
   "status" TEXT,
   "started_at" TEXT,
   "finished_at" TEXT,
   "inputs" TEXT,
   "llm" TEXT,
   "server_url" TEXT,
   "output" TEXT,
   "error" TEXT
, "decision" TEXT, "degraded" INTEGER, "llm_calls" INTEGER, "duration_s" REAL, "budget" TEXT);
CREATE TABLE "tool_calls" (
   "id" INTEGER PRIMARY KEY,
   "run_id" TEXT REFERENCES "runs"("run_id"),
   "tool" TEXT,
   "created_at" TEXT,
   "arguments" TEXT,
   "ok" INTEGER,
   "degraded" INTEGER,
   "degraded_reason" TEXT,
   "summary" TEXT,
   "data" TEXT,
   "elapsed_ms" REAL
);
CREATE INDEX "idx_tool_calls_run_id"
    ON "tool_calls" ("run_id");
"""

# A decision as the previous version stored it: no per-symbol date, chosen agent, agent target or consulted models.
_PREVIOUS_DECISION = (
    '{"as_of": "2012-06-29", "decisions": [{"symbol": "SP500", "action": "long", "target_position": 0.4, '
    '"conviction": 1.0, "size": 0.4, "followed": "aggressive", "regime": "bull", "decision_id": null, '
    '"timing": "now", "why": "aggressive chosen", "limits_applied": []}], "gross_exposure": 0.4, '
    '"estimated_var": null, "var_method": null, "limits": {"max_position": 1.0, "max_gross": 1.5, '
    '"max_var": 0.03, "drawdown_stop": 0.2}, "drawdown": 0.0, "models": [], "degraded": true, '
    '"degraded_inputs": ["strategy_signals[SP500]: no trained policy"]}')


def test_a_store_of_the_previous_version_is_migrated_in_place_and_its_runs_read_back(tmp_path: Path) -> None:
    from quantcrew.crew.decision import Decision
    from quantcrew.crew.outcomes import settle
    from quantcrew.crew.runs import SCHEMA_VERSION
    from quantcrew.data.symbols import load_symbol

    path = tmp_path / "runs.db"
    conn = sqlite3.connect(path)
    conn.executescript(_PREVIOUS_SCHEMA)
    conn.execute("INSERT INTO runs VALUES ('old1', 'full', 'succeeded', '2026-01-01T00:00:00', "
                 "'2026-01-01T00:00:05', '{\"symbols\": \"SP500\", \"end_date\": \"2012-06-29\"}', 'planner', "
                 "'http://127.0.0.1:1', 'report', NULL, ?, 1, 8, 4.5, '60 LLM calls, 600 s')", (_PREVIOUS_DECISION,))
    conn.execute("INSERT INTO tool_calls (run_id, tool, created_at, arguments, ok, degraded, degraded_reason, "
                 "summary, data, elapsed_ms) VALUES ('old1', 'regime_detection', '2026-01-01T00:00:01', "
                 "'{\"symbol\": \"SP500\"}', 1, 0, NULL, 'bull', '{\"current_label\": \"bull\"}', 12.5)")
    conn.commit()
    conn.close()

    store = RunsStore(path)
    run = store.get_run("old1")
    assert run is not None
    assert (run["status"], run["degraded"], run["gated"], run["llm_calls"], run["budget"]) == (
        "succeeded", True, None, 8, "60 LLM calls, 600 s")
    assert Decision.model_validate(run["decision"]).decisions[0].followed == "aggressive"
    [call] = run["tool_calls"]
    assert (call["tool"], call["data"], call["degraded"], call["gated"]) == (
        "regime_detection", {"current_label": "bull"}, False, False)
    assert run["outcomes"] == []
    # the old decision settles like a new one
    sp500 = load_symbol("SP500")
    report = settle(store, lambda _: sp500)
    [outcome] = store.outcomes()
    assert report.settled == 1 and outcome["decision_date"] == "2012-06-29"
    assert (outcome["agent"], outcome["agent_target"], outcome["reward_status"]) == ("aggressive", 1.0,
                                                                                     "no_decision")
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    RunsStore(path).close()  # opening a migrated store again changes nothing
    assert db.execute("SELECT COUNT(*) FROM decision_outcomes").fetchone()[0] == 1


def test_two_stores_opening_one_old_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    import threading

    path = tmp_path / "runs.db"
    conn = sqlite3.connect(path)
    conn.executescript(_PREVIOUS_SCHEMA)
    conn.close()
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait()
        try:
            RunsStore(path).close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(runs)")]
    assert columns.count("gated") == 1


def test_gated_results_and_the_settle_report_are_recorded(tmp_path: Path) -> None:
    store = RunsStore(tmp_path / "runs.db")
    run_id = store.start_run(kind="full", inputs={"symbols": "SP500"}, llm="planner", server_url=None)
    store.record_tool_call(run_id, ToolResult(tool="strategy_signals", ok=True, gated=True,
                                              gated_reason="balanced: gate failed; rule answered", summary="s",
                                              arguments={"symbol": "SP500"}))
    store.finish_run(run_id, status="succeeded", degraded=False, gated=True, settled={"settled": 2})
    run = store.get_run(run_id)
    assert run is not None
    assert (run["degraded"], run["gated"], run["settled"]) == (False, True, {"settled": 2})
    call = run["tool_calls"][0]
    assert (call["gated"], call["gated_reason"]) == (True, "balanced: gate failed; rule answered")


def test_an_outcome_is_stored_once_per_run_and_symbol(tmp_path: Path) -> None:
    store = RunsStore(tmp_path / "runs.db")
    run_id = store.start_run(kind="full", inputs={}, llm="planner", server_url=None)
    row = {"run_id": run_id, "symbol": "SP500", "decision_date": "2012-06-29", "outcome_date": "2012-07-02",
           "close": 100.0, "outcome_close": 101.0, "r": 0.01, "target": 0.5, "decision_return": 0.005,
           "agent": "aggressive", "agent_target": 1.0, "agent_return": 0.01, "decision_id": "dec-1",
           "reward_status": "pending", "reward_error": None}
    assert store.add_outcome(row, claim="a") is True
    assert store.add_outcome({**row, "r": 0.5}, claim="b") is False
    assert [r["r"] for r in store.outcomes()] == [0.01]
    assert store.claim_rewards("b") == []  # a's claim holds
    assert [r["symbol"] for r in store.claim_rewards("a")] == ["SP500"]
    assert store.finish_reward(run_id, "SP500", "b", status="rewarded") is False
    assert store.finish_reward(run_id, "SP500", "a", status="rewarded") is True
    assert store.pending_rewards() == 0 and store.claim_rewards("b") == []


def test_trials_ledger_counts_each_configuration_once_per_span(tmp_path: Path) -> None:
    from quantcrew.quant.trials import Trial

    def trial(name: str, digest: str, sharpe: float) -> Trial:
        return Trial(name=name, config_hash=digest, sharpe=sharpe, periods_per_year=252, n_bars=3500,
                     config={"seed": digest})

    store = RunsStore(tmp_path / "runs.db")
    assert store.record_trials("SP500 2005..2018 x", [trial("strategy", "a", 0.4), trial("follow x", "a", 0.3)]) == 2
    assert store.record_trials("SP500 2005..2018 x", [trial("strategy", "a", 0.41)]) == 0  # rerun: refreshed only
    assert store.record_trials("SP500 2005..2018 x", [trial("strategy", "b", 0.1)]) == 1
    assert store.record_trials("NASDAQ 2005..2018 y", [trial("strategy", "a", 0.2)]) == 1
    trials = store.span_trials("SP500 2005..2018 x")
    assert [(t.name, t.config_hash, t.sharpe) for t in trials] == [
        ("follow x", "a", 0.3), ("strategy", "a", 0.41), ("strategy", "b", 0.1)]
    assert trials[0].config == {"seed": "a"} and trials[0].periods_per_year == 252
    spans = {s["span"]: s for s in store.trial_spans()}
    assert spans["SP500 2005..2018 x"]["n_trials"] == 3 and spans["NASDAQ 2005..2018 y"]["n_trials"] == 1
    store.close()
    assert len(RunsStore(tmp_path / "runs.db").span_trials("SP500 2005..2018 x")) == 3  # kept on disk
