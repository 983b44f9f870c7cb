"""``quantcrew risk`` refuses bad weights before any server starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from quantcrew.cli import app
from quantcrew.crew.server_process import LocalServer


@pytest.fixture(autouse=True)
def no_server_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: LocalServer, meanwhile: object = None) -> LocalServer:
        raise AssertionError("an ML server was started for bad input")

    monkeypatch.setattr(LocalServer, "start", refuse)


@pytest.mark.parametrize(("args", "needle"), [
    (["--weights", "0.6,0.6"], "sum to 1.2"),
    (["--weights", "0.6"], "1 numbers for 2 symbols"),
    (["--symbols", ""], "symbols"),
])
def test_risk_bad_weights_exit_2_before_any_server(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["risk", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.stderr.split())
