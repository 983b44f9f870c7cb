"""``quantcrew backtest`` through typer's CliRunner: a small span on a live server, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from quantcrew.cli.backtest import backtest_command, parse_date
from quantcrew.crew.server_process import LocalServer
from tests.support.servers import CHILD_SERVER_ENV

SMALL = ["--symbols", "SP500", "--start", "2004-01-01", "--end", "2004-05-31", "--min-train", "300",
         "--select-every", "5"]


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    app.command("backtest")(backtest_command)
    app.command("other")(lambda: None)  # two commands: invoked by name, as under the quantcrew CLI
    return app


@pytest.fixture
def no_server_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused before any ML server is started."""
    def refuse(self: LocalServer, meanwhile: object = None) -> LocalServer:
        raise AssertionError("an ML server was started for bad input")

    monkeypatch.setattr(LocalServer, "start", refuse)


def test_parse_date_bare_years_cover_the_whole_year() -> None:
    assert parse_date("2005", end=False) == "2005-01-01"
    assert parse_date("2018", end=True) == "2018-12-31"
    assert parse_date(" 2007-03-02 ", end=True) == "2007-03-02"


def test_backtest_small_span_prints_table_and_writes_report(app: typer.Typer, live_server: LocalServer,
                                                           tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["backtest", *SMALL, "--server-url", live_server.url, "--out",
                                      str(tmp_path / "rep"), "--max-var", "0.03"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.stdout
    for word in ("Strategy", "buy & hold", "200-day trend", "10% vol target", "Total return", "Annual return",
                 "Sharpe", "Sortino", "Max drawdown", "Turnover", "Trades", "DSR", "Did the strategy beat",
                 "Returns by year", "fill next_open"):
        assert word in out, word
    assert "SP500 2004-01-02..2004-05-28" in out
    assert "beat buy & hold" in out  # the plain sentence: "did not beat" or "beat"
    # the bundled S&P 500's opens of 2004 are copies of the previous close: those fills wait for the close
    assert "stale" in out
    for name in ("report.html", "equity.png", "equity.csv", "positions.csv", "trades.csv"):
        assert (tmp_path / "rep" / name).is_file(), name
    assert "report:" in out


def test_backtest_json_years_give_parsable_summary(app: typer.Typer, live_server: LocalServer, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["backtest", "--symbols", "SP500", "--start", "2004", "--end", "2004",
                                      "--min-train", "300", "--refit-every", "126", "--server-url", live_server.url,
                                      "--out", str(tmp_path), "--json", "--drawdown-stop", "0.1"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["start"] == "2004-01-02" and summary["end"] == "2004-12-31"
    assert summary["config"]["limits"]["drawdown_stop"] == 0.1 and summary["config"]["refit_every"] == 126
    assert summary["regime_fits"] == 2 and summary["bandit_id"] in summary["model_ids"]
    assert set(summary["strategy"]) >= {"sharpe", "sortino", "max_drawdown", "turnover", "n_trades", "dsr"}
    assert Path(summary["report"]).is_file()
    assert set(summary["baselines"]) == set(summary["beat"]) == {"buy_and_hold", "trend", "vol_target"}
    assert summary["periods_per_year"] == 252 and [r["year"] for r in summary["yearly"]] == [2004]
    assert summary["trials"]["ledger"] and summary["trials"]["n_trials"] >= 5


def test_backtest_trials_ledger_counts_each_configuration_once(app: typer.Typer, live_server: LocalServer,
                                                               tmp_path: Path) -> None:
    def run(*extra: str) -> dict[str, Any]:
        result = CliRunner().invoke(app, ["backtest", "--symbols", "NASDAQ", "--start", "2004-01-01", "--end",
                                          "2004-03-31", "--min-train", "300", "--refit-every", "126", "--server-url",
                                          live_server.url, "--out", str(tmp_path), "--overwrite", "--json",
                                          *extra])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    first = run()
    again = run()  # the same configuration: no new trial
    other = run("--seed", "3")  # another seed is another trial (5: the strategy and four single agents)
    assert again["trials"]["new"] == 0 and again["trials"]["n_trials"] == first["trials"]["n_trials"]
    assert other["trials"]["new"] == 5 and other["trials"]["n_trials"] == first["trials"]["n_trials"] + 5
    assert other["trials"]["span"] == first["trials"]["span"]


@pytest.mark.slow
def test_backtest_without_server_url_starts_a_local_server_and_keeps_stdout_json(app: typer.Typer,
                                                                                 tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["backtest", *SMALL, "--out", str(tmp_path), "--json"], env=CHILD_SERVER_ENV)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # the server's start-up line went to stderr
    assert summary["n_bars"] == 103 and summary["regime_fits"] == 2
    assert "ML server started" in result.stderr


@pytest.mark.parametrize(("args", "words"), [
    (["--symbols", "NOPE"], ["unknown symbol 'NOPE'", "SP500", "NASDAQ"]),
    (["--start", "2010", "--end", "2009"], ["start: 2010-01-01 is after end 2009-12-31"]),
    (["--start", "2005", "--end", "2030"], ["end: 2030-12-31 is after the data", "1999-01-04 to 2018-12-31"]),
    (["--start", "1999-03-01"], ["start: 1999-03-01 leaves", "min_train=500"]),
    (["--max-var", "2"], ["--max-var"]),
    (["--policy", "greedy"], ["policy: unknown 'greedy'"]),
    (["--fill", "open"], ["fill: unknown 'open'", "next_open"]),
    (["--trade-band", "1.5"], ["trade_band: must be in [0, 1)"]),
    (["--agents", "neural"], ["agents: unknown 'neural'", "rules, models"]),
])
def test_backtest_bad_input_exits_2_before_any_server(app: typer.Typer, no_server_start: None, args: list[str],
                                                      words: list[str]) -> None:
    result = CliRunner().invoke(app, ["backtest", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    for word in words:
        assert word in message, message
    assert result.stdout == ""


def test_an_out_folder_holding_a_report_is_refused_before_any_server_unless_overwrite(
        app: typer.Typer, no_server_start: None, tmp_path: Path) -> None:
    (tmp_path / "report.html").write_text("an earlier run's report")
    result = CliRunner().invoke(app, ["backtest", *SMALL, "--out", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"--out: {tmp_path} already holds a report (report.html); pass --overwrite" in message
    assert (tmp_path / "report.html").read_text() == "an earlier run's report"
    replaced = CliRunner().invoke(app, ["backtest", *SMALL, "--out", str(tmp_path), "--overwrite"])
    assert isinstance(replaced.exception, AssertionError)  # past the check: it went on to start a server


def test_without_out_every_run_writes_a_new_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from quantcrew.cli.backtest import _report_folder

    monkeypatch.chdir(tmp_path)
    first = _report_folder(None, ["SP500", "/data/my prices.csv"], overwrite=False)
    assert first.parent == Path("backtest-report") and first.name.endswith("-SP500-my_prices")
    first.mkdir(parents=True)
    second = _report_folder(None, ["SP500", "/data/my prices.csv"], overwrite=False)
    assert second != first and not second.exists()
