"""``quantcrew risk`` refuses bad weights, unknown symbols and dates outside the data before any server starts."""

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
    # symbols and dates are checked up front, as `run` checks them
    (["--symbols", "SP500,NASDAQ,VIX", "--end-date", "2008-12-31"],
     "--end-date 2008-12-31 is outside the data of VIX: it has bars from 2014-01-03 to 2019-01-03"),
    (["--symbols", "SP500,NOPE"], "unknown symbol 'NOPE'"),
    (["--end-date", "last week"], "end_date must be YYYY-MM-DD"),
])
def test_risk_bad_input_exits_2_before_any_server(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["risk", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.stderr.split())
