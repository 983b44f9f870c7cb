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
