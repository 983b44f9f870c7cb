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
