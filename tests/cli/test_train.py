"""``quantcrew train`` refuses bad arguments before any server starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from quantcrew.cli import app
from quantcrew.crew.server_process import LocalServer


@pytest.fixture(autouse=True)
def no_server_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: LocalServer) -> LocalServer:
        raise AssertionError("an ML server was started for bad input")

    monkeypatch.setattr(LocalServer, "start", refuse)


@pytest.mark.parametrize(("args", "needle"), [
    (["--no-wait"], "--no-wait needs --server-url"),
    (["--model", "xgboost"], "'rl' or 'ensemble'"),
    (["--symbol", "NOPE"], "NOPE"),
    (["--algo", "sac"], "'ppo', 'a2c' or 'dqn'"),
    (["--model", "ensemble", "--test-start", "someday"], "test_start"),
])
def test_train_bad_arguments_exit_2_before_any_server(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["train", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.stderr.split())
