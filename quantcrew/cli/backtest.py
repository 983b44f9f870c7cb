"""``quantcrew backtest``: the walk-forward backtest of the crew's decision pipeline, as a command.

Registered in :mod:`quantcrew.cli.app` with ``app.command("backtest")(backtest_command)``. Only
typer, rich and the shared CLI helpers are imported here; the backtest, the data and the server
are imported when the command runs, so registering it costs the CLI nothing.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from quantcrew.cli.common import console as stdout_console
from quantcrew.cli.common import err_console, load_cli_settings, ml_server
from quantcrew.cli.exits import ExitCode, exit_for_error, fail

if TYPE_CHECKING:
    from quantcrew.backtest.walk_forward_data import WalkForwardData
    from quantcrew.backtest.walk_forward_result import WalkForwardResult

__all__ = ["backtest_command", "parse_date"]

_YEAR = re.compile(r"^\d{4}$")


def parse_date(value: str, *, end: bool) -> str:
    """An ISO date from ``YYYY-MM-DD`` or a bare year (``2005`` is 2005-01-01 as a start, 2005-12-31 as an end)."""
    value = value.strip()
    if _YEAR.match(value):
        return f"{value}-12-31" if end else f"{value}-01-01"
    return value


def backtest_command(
    symbols: Annotated[str, typer.Option("--symbols", "--symbol",
                                         help="Comma list: bundled series (SP500, NASDAQ, ...), data-folder "
                                              "symbols or files; several are aligned on common dates.")] = "SP500",
    start: Annotated[str, typer.Option("--start-date", "--start",
                                       help="First date (YYYY-MM-DD, or a year: 2005 = 2005-01-01).")]
    = "2005-01-01",
    end: Annotated[str, typer.Option("--end-date", "--end",
                                     help="Last date (YYYY-MM-DD, or a year: 2018 = 2018-12-31).")] = "2018-12-31",
    cost_bps: Annotated[float, typer.Option(min=0.0, help="Cost per unit of turnover, in basis points.")] = 5.0,
    refit_every: Annotated[int, typer.Option(min=1, help="Bars between regime refits (expanding window).")] = 63,
    min_train: Annotated[int, typer.Option(min=100, help="Bars of history the first regime fit needs before "
                                                         "--start.")] = 500,
    select_every: Annotated[int, typer.Option(min=1, help="Bars between the meta-orchestrator's choices.")] = 21,
    rebalance_every: Annotated[int, typer.Option(min=1, help="Bars between decisions.")] = 1,
    cooldown: Annotated[int, typer.Option(min=1, help="Bars flat after a drawdown stop before re-entry.")] = 21,
    policy: Annotated[str, typer.Option(help="Bandit policy of the meta-orchestrator.")] = "discounted_thompson",
    max_position: Annotated[float | None, typer.Option(help="Largest |position| per symbol (default: the "
                                                            "decision's RiskLimits).")] = None,
    max_gross: Annotated[float | None, typer.Option(help="Largest gross exposure.")] = None,
    max_var: Annotated[float | None, typer.Option(help="Largest one-day 95% VaR of the book, e.g. 0.02.")] = None,
    drawdown_stop: Annotated[float | None, typer.Option(help="Drawdown that closes every position, e.g. 0.2.")]
    = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the regime fits and the bandit.")] = 0,
    fill: Annotated[str, typer.Option(help="next_open: decided at the close, filled at the next open (a stale open "
                                           "fills at that bar's close); close: filled at the same close "
                                           "(optimistic).")] = "next_open",
    trade_band: Annotated[float, typer.Option(help="No-trade band: keep a position whose new target is within "
                                                   "this fraction of equity of it (same side).")] = 0.0,
    adjust_rate: Annotated[float, typer.Option(help="Partial adjustment: trade this fraction of the gap to each "
                                                    "new target (1: all of it; a drawdown stop always in "
                                                    "full).")] = 1.0,
    agents: Annotated[str, typer.Option(help="rules: the agents' transparent rules; models: the RL policies, "
                                             "the ensemble and its execution network, retrained on an expanding "
                                             "window as server jobs (cached).")] = "rules",
    retrain_every: Annotated[int | None, typer.Option(min=20, help="With --agents models: bars per training "
                                                                   "window (default a year of the calendar).")]
    = None,
    timesteps: Annotated[int, typer.Option(min=100, help="With --agents models: steps per policy run.")] = 10_000,
    model_budget_minutes: Annotated[float | None, typer.Option(
        min=0.1, help="With --agents models: minutes the training may take in all; the windows trained stay "
                      "cached and a rerun resumes.")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder of the report (report.html, equity.png, equity.csv, "
                                                  "positions.csv, trades.csv); default: a new folder "
                                                  "backtest-report/<time>-<symbols>. A folder that holds a report "
                                                  "is refused unless --overwrite.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the report already in --out.")] = False,
    server_url: Annotated[str | None, typer.Option(help="ML server URL; default: start one locally.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of a table.")] = False,
    config: Annotated[Path | None, typer.Option("--config", help="YAML settings file.")] = None,
) -> None:
    """Walk-forward backtest of the crew's decision pipeline vs buy-and-hold, a trend filter and a vol target."""
    from quantcrew.backtest.walk_forward import check_options
    from quantcrew.backtest.walk_forward_data import BacktestInputError, prepare_data
    from quantcrew.data.errors import DataError

    err = err_console
    console = err_console if as_json else stdout_console
    try:  # refuse bad input here, before a server is started for nothing
        limits = _limits(max_position=max_position, max_gross=max_gross, max_var=max_var, drawdown_stop=drawdown_stop)
        check_options(refit_every=refit_every, min_train=min_train, cost_bps=cost_bps, cooldown=cooldown,
                      rebalance_every=rebalance_every, select_every=select_every, policy=policy, fill=fill,
                      trade_band=trade_band, adjust_rate=adjust_rate, agents=agents)
        names = [s.strip() for s in symbols.split(",") if s.strip()]
        data_settings = load_cli_settings(config, client__url=server_url)
        data = prepare_data(names, parse_date(start, end=False), parse_date(end, end=True), settings=data_settings,
                            min_train=min_train)
        out = _report_folder(out, names, overwrite=overwrite)  # checked now, not after an hour of training
    except (BacktestInputError, DataError) as exc:
        fail(err, str(exc), ExitCode.BAD_INPUT)
    # With --json, stdout carries the JSON only: whatever the run prints (server start, progress) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        result = _run(data, data_settings, config, console=console, err=err, limits=limits, refit_every=refit_every,
                      min_train=min_train, cost_bps=cost_bps, policy=policy, cooldown=cooldown,
                      rebalance_every=rebalance_every, select_every=select_every, seed=seed, fill=fill,
                      trade_band=trade_band, adjust_rate=adjust_rate, agents=agents, retrain_every=retrain_every,
                      model_settings=_model_settings(agents, timesteps, cost_bps),
                      model_budget_s=None if model_budget_minutes is None else 60.0 * model_budget_minutes)
    from quantcrew.backtest.export import write_csv
    from quantcrew.backtest.report import write_report

    html_path, png_path = write_report(result, out)
    csv_paths = write_csv(result, out)
    if as_json:
        typer.echo(json.dumps(_finite({**result.summary(), "report": str(html_path), "equity_png": str(png_path),
                                       "csv": [str(p) for p in csv_paths]})))
        return
    _print_table(console, result)
    console.print(f"report: {html_path}\nequity curve: {png_path}\ncsv: {', '.join(str(p) for p in csv_paths)}")


def _report_folder(out: Path | None, names: list[str], *, overwrite: bool) -> Path:
    """Where the report goes: ``out``, refused when it holds a report and ``overwrite`` is off; by default a
    new folder under ``backtest-report/`` named by the time and the symbols, so that no run replaces another's.

    Raises:
        BacktestInputError: ``--out`` holds a report, or is a file.
    """
    from quantcrew.backtest.export import CSV_FILES
    from quantcrew.backtest.report import REPORT_FILES
    from quantcrew.backtest.walk_forward_data import BacktestInputError

    if out is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        tag = "-".join(re.sub(r"[^A-Za-z0-9]+", "_", Path(n).stem).strip("_") or "data" for n in names)[:60]
        out = Path("backtest-report") / f"{stamp}-{tag}"
        k = 1
        while out.exists():
            k += 1
            out = Path("backtest-report") / f"{stamp}-{tag}-{k}"
        return out
    if out.exists() and not out.is_dir():
        raise BacktestInputError("--out", f"{out} is a file, not a folder")
    existing = [name for name in (*REPORT_FILES, *CSV_FILES) if (out / name).exists()]
    if existing and not overwrite:
        raise BacktestInputError("--out", f"{out} already holds a report ({', '.join(existing)}); pass --overwrite "
                                          "to replace it, or name another folder")
    return out


def _model_settings(agents: str, timesteps: int, cost_bps: float) -> Any:
    if agents != "models":
        return None
    from quantcrew.backtest.agent_models import ModelSettings

    return ModelSettings(timesteps=timesteps, cost_bps=cost_bps)


def _limits(**given: float | None) -> Any:
    from pydantic import ValidationError

    from quantcrew.backtest.walk_forward_data import BacktestInputError
    from quantcrew.crew.decision import RiskLimits

    try:
        return RiskLimits(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "limits"
        raise BacktestInputError(field, str(first["msg"])) from exc


def _run(data: WalkForwardData, settings: Any, config: Path | None, *, console: Console, err: Console,
         **options: Any) -> WalkForwardResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from quantcrew.backtest.agent_models import ModelBudgetError
    from quantcrew.backtest.regimes import RegimeJobError
    from quantcrew.backtest.walk_forward import walk_forward
    from quantcrew.crew.runs import RunsStore
    from quantcrew.crew.server_process import ServerStartError
    from quantcrew.tools.client import make_client
    from quantcrew.tools.errors import MLClientError

    columns = (TextColumn("[bold]walk-forward"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TextColumn("{task.description}"), TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with ml_server(settings, config), make_client(settings.client) as client, \
                contextlib.closing(RunsStore(settings.runs_db)) as ledger, \
                Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("starting", total=None)

            def show(done: int, total: int, message: str) -> None:
                bar.update(task, completed=done, total=total, description=message)

            return walk_forward(data, client=client, on_progress=show, ledger=ledger, **options)
    except ModelBudgetError as exc:
        fail(err, str(exc), ExitCode.BUDGET_EXCEEDED)
    except (MLClientError, ServerStartError, RegimeJobError) as exc:
        fail(err, str(exc), exit_for_error(exc))
    except KeyboardInterrupt:
        err.print("[yellow]interrupted; stopping the ML server[/yellow]")
        raise typer.Exit(ExitCode.INTERRUPTED) from None


def _print_table(console: Console, result: WalkForwardResult) -> None:
    from quantcrew.backtest.report import stats_headers, stats_rows, verdict_rows, yearly_rows
    from quantcrew.backtest.walk_forward import FILL_TEXT

    c = result.config
    table = Table(title=f"Walk-forward: {', '.join(result.symbols)} {result.dates[0]}..{result.dates[-1]} "
                        f"({len(result.dates)} bars, {c['cost_bps']:g} bp costs, fill {c['fill']})")
    for k, header in enumerate(stats_headers(result)):
        table.add_column(header, justify="left" if k == 0 else "right")
    for row in stats_rows(result):
        table.add_row(*row)
    console.print(table)
    verdicts = Table(title="Did the strategy beat each baseline? (Sharpe after costs, same fills)")
    for k, header in enumerate(["Against", "Sharpe difference", "90% interval", "Verdict"]):
        verdicts.add_column(header, justify="left" if k in (0, 3) else "right")
    for row in verdict_rows(result):
        verdicts.add_row(*row)
    console.print(verdicts)
    headers, rows = yearly_rows(result)
    years = Table(title="Returns by year")
    for k, header in enumerate(headers):
        years.add_column(header, justify="left" if k == 0 else "right")
    for row in rows:
        years.add_row(*row)
    console.print(years)
    for comparison in result.comparisons:
        console.print(comparison.sentence, markup=False)
    t = result.trials
    console.print(f"[dim]fills: {FILL_TEXT.get(c['fill'], c['fill'])}; {len(result.regime_fits)} regime fits "
                  f"(refit every {c['refit_every']} bars), bandit {result.bandit_id} ({c['policy']}, choosing every "
                  f"{c['select_every']} bars), agents: {result.agents_used}; "
                  f"DSR over {t.n_trials} trials on this span ({t.new} new); "
                  f"drawdown stops: {', '.join(result.stop_dates) or 'none'}; {result.wall_s:.0f} s[/dim]")
    for note in result.notes:
        console.print(f"note: {note}", markup=False, style="yellow")


def _finite(value: Any) -> Any:
    """``value`` with every NaN / infinity replaced by None (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
