"""``quantcrew run`` as a user runs it: a child ML server, the crew, the report, the stored run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quantcrew.crew.runs import RunsStore
from quantcrew.crew.server_process import LocalServer
from quantcrew.data import load_sample
from quantcrew.data.append import write_bars
from tests.support.servers import CHILD_SERVER_ENV

pytestmark = pytest.mark.e2e

CLI = [sys.executable, "-m", "quantcrew.cli"]


def _env(home: Path) -> dict[str, str]:
    """The CLI's environment: ``home``, wide output, and the settings of the child server it starts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTCREW_")}
    env.update(QUANTCREW_HOME=str(home), COLUMNS="200", **CHILD_SERVER_ENV)
    return env


def _server_children(pid: int) -> list[int]:
    """PIDs of quantcrew ML servers whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and "quantcrew.ml_server" in cmdline:
            found.append(int(entry.name))
    return found


def test_run_starts_server_prints_report_and_stores_run(tmp_path: Path) -> None:
    proc = subprocess.run([*CLI, "run", "--crew", "regime", "--symbol", "SP500", "--lookback", "400"],
                          env=_env(tmp_path),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "Regime report: SP500" in out
    assert "regime as of 2018-12-31" in out
    assert "offline planner" in out.lower()
    store = RunsStore(tmp_path / "runs.db")
    runs = store.list_runs()
    assert len(runs) == 1 and runs[0]["status"] == "succeeded"
    run = store.get_run(runs[0]["run_id"])
    assert run is not None
    calls = run["tool_calls"]
    assert [c["tool"] for c in calls] == ["regime_detection"]
    assert calls[0]["degraded"] is False and calls[0]["arguments"]["lookback"] == 400
    assert calls[0]["data"]["method_used"] in {"gaussian_hmm", "threshold_rules"}
    shown = subprocess.run([*CLI, "runs", "show", runs[0]["run_id"]], env=_env(tmp_path), capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and "regime_detection" in shown.stdout


def test_run_full_crew_prints_one_decision_per_symbol_and_stores_it(tmp_path: Path, live_server: LocalServer) -> None:
    # the session's server (nothing is trained on it); starting one is test_run_starts_server_...'s part
    proc = subprocess.run([*CLI, "run", "--symbols", "SP500,NASDAQ", "--lookback", "400", "--server-url",
                           live_server.url], env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 4, proc.stdout + proc.stderr  # degraded: rules answered for untrained models
    assert "Decision: SP500, NASDAQ" in proc.stdout and "DEGRADED" in proc.stdout
    assert "gross exposure" in proc.stdout and "drawdown stop" in proc.stdout
    # nothing trained: one line per symbol says what answers instead, and the command that fixes it
    said = " ".join(proc.stderr.split())
    for symbol in ("SP500", "NASDAQ"):
        assert (f"{symbol}: nothing trained on this home for the RL agents, the ensemble and the execution network: "
                f"rules will answer for them (degraded); `quantcrew setup --symbols {symbol}` trains them.") in said
    store = RunsStore(tmp_path / "runs.db")
    [row] = store.list_runs()
    run = store.get_run(row["run_id"])
    assert run is not None and run["status"] == "degraded" and run["kind"] == "full"
    assert run["llm"] == "quantcrew-planner" and run["llm_calls"] >= 8
    assert [d["symbol"] for d in run["decision"]["decisions"]] == ["SP500", "NASDAQ"]
    assert run["degraded"] is True  # no RL policy or ensemble was trained in this home
    tools = {c["tool"] for c in run["tool_calls"]}
    assert {"regime_detection", "risk_metrics", "strategy_signals", "agent_selection", "execution_plan",
            "portfolio_decision"} <= tools
    assert all(c["elapsed_ms"] > 0 for c in run["tool_calls"])


def test_run_over_llm_budget_is_recorded_and_exits_3(tmp_path: Path) -> None:
    proc = subprocess.run([*CLI, "run", "--symbols", "SP500", "--max-llm-calls", "2", "--server-url",
                           "http://127.0.0.1:9"], env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "LLM-call budget of 2 exhausted" in proc.stderr
    [row] = RunsStore(tmp_path / "runs.db").list_runs()
    assert row["status"] == "budget_exceeded" and row["llm_calls"] == 2


def test_ctrl_c_stops_the_child_server(tmp_path: Path) -> None:
    proc = subprocess.Popen([*CLI, "run", "--symbol", "SP500", "--lookback", "400"], env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    children: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not children:
        children = _server_children(proc.pid)
        time.sleep(0.05)
    assert children, "the CLI never started an ML server"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode in (4, 130)  # interrupted, or it had already finished (degraded: nothing trained)
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_bad_settings_exit_2_with_message(tmp_path: Path) -> None:
    env = _env(tmp_path)
    env["QUANTCREW_CLIENT__TIMEOUT_S"] = "-1"
    proc = subprocess.run([*CLI, "run"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "QUANTCREW_CLIENT__TIMEOUT_S" in proc.stderr


def test_risk_command_runs_the_risk_manager(tmp_path: Path, live_server: LocalServer) -> None:
    proc = subprocess.run([*CLI, "risk", "--symbols", "SP500,NASDAQ", "--weights", "0.6,0.4", "--lookback", "400",
                           "--server-url", live_server.url], env=_env(tmp_path), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Risk report: SP500, NASDAQ" in proc.stdout
    assert "filtered_historical" in proc.stdout and "degraded: false" in proc.stdout
    store = RunsStore(tmp_path / "runs.db")
    [row] = store.list_runs(5)
    assert row["kind"] == "risk" and row["status"] == "succeeded"


def test_risk_command_refuses_weights_that_do_not_sum_to_one(tmp_path: Path) -> None:
    proc = subprocess.run([*CLI, "risk", "--symbols", "SP500,NASDAQ", "--weights", "0.6,0.6"],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "sum to 1.2" in proc.stderr and "normalize" in proc.stderr


def test_train_command_trains_stores_and_reports_out_of_sample(tmp_path: Path, own_server: LocalServer) -> None:
    # the two train tests share this module's training server: torch and SB3 load in it once
    proc = subprocess.run([*CLI, "train", "--agents", "aggressive,contrarian", "--algo", "a2c", "--timesteps", "600",
                           "--seeds", "1", "--train-end", "2010-12-31", "--json", "--server-url", own_server.url],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import json

    job = json.loads(proc.stdout)  # stdout is the JSON alone: the progress bar went to stderr
    # 600 steps a run, one seed x the two default reward scales, two agents
    assert job["status"] == "succeeded" and job["progress"]["done"] == 600 * 2 * 2
    result = job["result"]
    assert [p["agent"] for p in result["policies"]] == ["aggressive", "contrarian"]
    assert result["train_end"] == "2010-12-31" and result["test_start"] == "2011-01-03"
    assert result["test_end"] == "2018-12-31"


def test_train_ensemble_runs_walk_forward_and_prints_calibration(tmp_path: Path, own_server: LocalServer) -> None:
    # the S&P 500 from 2013 in the home's data folder, where `quantcrew data add` writes: read before the bundled
    # series, it keeps the walk-forward's fits small (about 900 bars to train on, 500 to test)
    write_bars(load_sample("SP500").between("2013-01-01", None), tmp_path / "data" / "SP500.csv")
    proc = subprocess.run([*CLI, "train", "--model", "ensemble", "--members", "1", "--epochs", "1", "--folds", "1",
                           "--test-start", "2017-01-01", "--server-url", own_server.url], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ECE (15 bins)" in proc.stdout and "mc_dropout" in proc.stdout
    assert "1 folds; 2017-01-03 .. 2018-12" in proc.stdout  # the folder's series was the one trained on
    assert "ensemble-SP500 v1" in proc.stdout and "gate " in proc.stdout
    # a one-epoch ensemble is judged like any other: deployed only when its gate passed, and the line says which
    assert ("deployed as full; gate PASSED" in proc.stdout) or ("not deployed (gated" in proc.stdout)
    assert "execution network execution-" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--algo", "sac"], "'ppo', 'a2c' or 'dqn'"),
        (["--agents", "reckless"], "conservative"),
        (["--algo", "dqn", "--action-mode", "continuous"], "dqn"),
        (["--symbol", "NOPE"], "NOPE"),
        (["--model", "xgboost"], "'rl' or 'ensemble'"),
        (["--model", "ensemble", "--test-start", "someday"], "test_start"),
    ],
)
def test_train_command_refuses_bad_arguments_before_starting_a_server(tmp_path: Path, args: list[str],
                                                                     needle: str) -> None:
    proc = subprocess.run([*CLI, "train", *args], env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert needle in proc.stderr
    assert "ML server started" not in proc.stdout + proc.stderr
