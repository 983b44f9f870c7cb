"""``quantcrew retrain`` and ``quantcrew schedule add-training``: inputs checked up front, honest exit codes."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from quantcrew.cli import app
from quantcrew.cli.exits import ExitCode
from quantcrew.config.settings import load_settings
from quantcrew.crew.retraining import RETRAIN_KIND, RetrainPolicy, RetrainStore
from quantcrew.crew.schedule import ScheduleStore
from quantcrew.crew.server_process import free_port

runner = CliRunner()


def test_add_training_stores_a_retrain_schedule_whose_inputs_make_a_policy() -> None:
    result = runner.invoke(app, ["schedule", "add-training", "--every-seconds", "3600", "--symbols", "SP500,NASDAQ",
                                 "--quality-limit", "0.7", "--rollback-limit", "0.75", "--cooldown-hours", "24",
                                 "--epochs", "5"])
    assert result.exit_code == 0, result.output
    with ScheduleStore(load_settings().runs_db) as store:
        [schedule] = store.list()
    assert schedule.kind == RETRAIN_KIND
    policy = RetrainPolicy.from_inputs(schedule.inputs)
    assert policy.symbols == ("SP500", "NASDAQ") and policy.cooldown_s == 24 * 3600.0
    assert (policy.quality_limit, policy.rollback_limit, dict(policy.train)) == (0.7, 0.75, {"epochs": 5})


@pytest.mark.parametrize(("args", "named"), [
    (["--every-seconds", "60", "--symbols", "NOPE"], "--symbols"),
    (["--every-seconds", "60", "--holdout-bars", "3"], "holdout-bars"),
    (["--symbols", "SP500"], "--cron or --every-seconds"),
])
def test_add_training_refuses_bad_input_naming_it_and_stores_nothing(args: list[str], named: str) -> None:
    result = runner.invoke(app, ["schedule", "add-training", *args])
    assert result.exit_code == ExitCode.BAD_INPUT, result.output
    assert named in result.output
    with ScheduleStore(load_settings().runs_db) as store:
        assert store.list() == []


def test_retrain_with_the_server_down_fails_every_symbol_says_why_and_records_it() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = runner.invoke(app, ["retrain", "--symbols", "SP500", "--server-url", dead, "--json"])
    assert result.exit_code == ExitCode.FAILED, result.output
    shown = json.loads(result.stdout)
    assert shown["status"] == "failed" and shown["symbols"]["SP500"]["outcome"] == "failed"
    assert "SP500: failed" in result.stderr
    store = RetrainStore(load_settings().runs_db)
    try:
        [event] = store.events()
    finally:
        store.close()
    assert (event.symbol, event.step) == ("SP500", "failed") and "Unavailable" in event.detail["error"]
