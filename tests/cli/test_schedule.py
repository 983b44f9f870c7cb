"""``quantcrew schedule ...`` and ``quantcrew scheduler``, wired the way the ``quantcrew`` app wires them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from quantcrew.cli.common import console
from quantcrew.cli.schedule import schedule_app, scheduler_command
from quantcrew.config.settings import Settings
from quantcrew.crew.schedule import ScheduleStore

REPO = Path(__file__).resolve().parents[2]

app = typer.Typer()
app.add_typer(schedule_app, name="schedule")
app.command("scheduler")(scheduler_command)

runner = CliRunner()


@pytest.fixture
def home(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The CLI reads its settings from the environment: point it at the ``settings`` home (wide tables too)."""
    monkeypatch.setenv("QUANTCREW_HOME", str(settings.home))
    monkeypatch.setattr(console, "width", 250)
    return settings


def stored(settings: Settings) -> list[str]:
    with ScheduleStore(settings.runs_db) as store:
        return [s.schedule_id for s in store.list()]


def test_add_with_bad_cron_exits_2_and_stores_nothing(home: Settings) -> None:
    result = runner.invoke(app, ["schedule", "add", "--cron", "0 25 * * 1-5", "--symbols", "SP500"])
    assert result.exit_code == 2
    assert "--cron: invalid cron expression '0 25 * * 1-5'" in result.output
    assert "the last value (25) is higher than the maximum value (23)" in result.output
    assert stored(home) == []


def test_add_needs_exactly_one_trigger(home: Settings) -> None:
    for args in ([], ["--cron", "* * * * *", "--every-seconds", "5"]):
        result = runner.invoke(app, ["schedule", "add", "--symbols", "SP500", *args])
        assert result.exit_code == 2
        assert "give exactly one of --cron or --every-seconds" in result.output
    assert stored(home) == []


def test_add_with_unknown_symbol_exits_2_naming_the_known_ones(home: Settings) -> None:
    result = runner.invoke(app, ["schedule", "add", "--cron", "0 22 * * 1-5", "--symbols", "SP500,NOSUCH"])
    assert result.exit_code == 2
    assert "--symbols" in result.output and "NOSUCH" in result.output and "NASDAQ" in result.output
    assert stored(home) == []


def test_add_with_unknown_kind_exits_2_listing_the_crews(home: Settings) -> None:
    result = runner.invoke(app, ["schedule", "add", "--cron", "0 22 * * 1-5", "--crew", "nosuch"])
    assert result.exit_code == 2
    assert "--crew: no crew 'nosuch'; defined:" in result.output and "regime" in result.output
    assert stored(home) == []


def test_add_fits_inputs_to_the_crew(home: Settings) -> None:
    result = runner.invoke(app, ["schedule", "add", "--every-seconds", "60", "--crew", "risk",
                                 "--symbols", "SP500,NASDAQ,VIX", "--lookback", "500"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["schedule", "add", "--cron", "0 22 * * 1-5", "--crew", "regime", "--symbols", "VIX"])
    assert result.exit_code == 0, result.output
    with ScheduleStore(home.runs_db) as store:
        risk, regime = store.list()
    assert risk.inputs == {"symbols": "SP500,NASDAQ,VIX", "weights": "0.333333,0.333333,0.333333", "lookback": 500}
    assert (risk.every_seconds, risk.cron) == (60, None)
    assert regime.inputs == {"symbols": "VIX"}

    result = runner.invoke(app, ["schedule", "add", "--cron", "0 22 * * 1-5", "--crew", "regime",
                                 "--symbols", "SP500,VIX"])
    assert result.exit_code == 2
    assert "the 'regime' crew analyses one symbol, got 2" in result.output
    result = runner.invoke(app, ["schedule", "add", "--cron", "0 22 * * 1-5", "--crew", "risk",
                                 "--symbols", "SP500,VIX", "--weights", "0.5,0.2"])
    assert result.exit_code == 2 and "weights sum to 0.7" in result.output
    result = runner.invoke(app, ["schedule", "add", "--cron", "0 22 * * 1-5", "--crew", "regime",
                                 "--weights", "1"])
    assert result.exit_code == 2 and "--weights: the 'regime' crew takes no weights" in result.output
    assert len(stored(home)) == 2


def test_add_list_remove_round_trip(home: Settings) -> None:
    result = runner.invoke(app, ["schedule", "add", "--cron", "0 22 * * 1-5", "--crew", "regime",
                                 "--symbols", "SP500"])
    assert result.exit_code == 0, result.output
    [schedule_id] = stored(home)
    assert f"schedule {schedule_id} added: regime crew, cron '0 22 * * 1-5'" in result.output

    listed = runner.invoke(app, ["schedule", "list"])
    assert listed.exit_code == 0, listed.output
    assert schedule_id in listed.output and "0 22 * * 1-5" in listed.output and "regime" in listed.output

    removed = runner.invoke(app, ["schedule", "remove", schedule_id])
    assert removed.exit_code == 0, removed.output
    assert f"schedule {schedule_id} removed" in removed.output
    assert stored(home) == []
    assert "no schedules" in runner.invoke(app, ["schedule", "list"]).output


def test_remove_unknown_id_exits_2_listing_known_ids(home: Settings) -> None:
    with ScheduleStore(home.runs_db) as store:
        kept = store.add("0 22 * * 1-5", "regime", {"symbol": "SP500"})
    result = runner.invoke(app, ["schedule", "remove", "nosuch"])
    assert result.exit_code == 2
    assert "no schedule 'nosuch'" in result.output and kept.schedule_id in result.output
    assert stored(home) == [kept.schedule_id]


def test_runs_lists_firings_and_refuses_unknown_schedule(home: Settings) -> None:
    with ScheduleStore(home.runs_db) as store:
        schedule = store.add(kind="regime", inputs={"symbol": "SP500"}, every_seconds=2)
        row = store.start_run(schedule.schedule_id, datetime.now(UTC))
        store.finish_run(row, status="failed", run_id="crew-9", error="RuntimeError: boom")
        store.record_skipped(schedule.schedule_id, datetime.now(UTC), "previous run still in flight")

    result = runner.invoke(app, ["schedule", "runs", "--schedule-id", schedule.schedule_id])
    assert result.exit_code == 0, result.output
    assert "failed" in result.output and "crew-9" in result.output and "RuntimeError: boom" in result.output
    assert "skipped" in result.output

    unknown = runner.invoke(app, ["schedule", "runs", "--schedule-id", "nosuch"])
    assert unknown.exit_code == 2 and "no schedule 'nosuch'" in unknown.output


@pytest.mark.slow  # the child imports quantcrew.crew, hence crewai: ~10 s
def test_scheduler_command_runs_until_sigterm(home: Settings) -> None:
    code = "import typer; from quantcrew.cli.schedule import scheduler_command; typer.run(scheduler_command)"
    proc = subprocess.Popen([sys.executable, "-c", code, "--server-url", "http://127.0.0.1:9", "--resync-seconds",
                             "0.2"], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # blocks until the scheduler is up
        assert "scheduler running 0 schedules" in first
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "scheduler stopped" in out


def test_add_defaults_to_the_full_crew(home: Settings) -> None:
    result = runner.invoke(app, ["schedule", "add", "--cron", "0 22 * * 1-5", "--symbols", "SP500,NASDAQ"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["schedule", "add", "--cron", "30 7 * * *", "--symbols", "SP500,NASDAQ",
                                 "--weights", "0.7,0.3"])
    assert result.exit_code == 0, result.output
    with ScheduleStore(home.runs_db) as store:
        plain, weighted = store.list()
    assert (plain.kind, plain.inputs) == ("full", {"symbols": "SP500,NASDAQ"})  # kickoff fills equal weights
    assert weighted.inputs == {"symbols": "SP500,NASDAQ", "weights": "0.7,0.3"}
