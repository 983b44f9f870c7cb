"""The ``quantcrew`` command line: run the crew, serve the models, inspect past runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from quantcrew.backtest.cli import backtest_command
from quantcrew.config.settings import Settings, SettingsError, load_settings
from quantcrew.crew.schedule_cli import schedule_app, scheduler_command

__all__ = ["app", "main"]

app = typer.Typer(name="quantcrew", help="CrewAI agents for quantitative research, over the quantcrew ML server.",
                  no_args_is_help=True, add_completion=False)
runs_app = typer.Typer(help="Inspect stored runs.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML settings file.")]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition("__")
        setattr(getattr(settings, section), key, value)
    return settings


def _check_symbols(names: list[str], settings: Settings, end_date: str | None) -> None:
    """Refuse unknown symbols and an end date outside the data, before any server starts."""
    from quantcrew.data import DataError, load_symbol

    for name in names:
        try:
            bars = load_symbol(name, data_dir=settings.data.data_dir, max_gap_days=settings.data.max_gap_days)
        except DataError as exc:
            err_console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from exc
        if end_date is not None:
            first = str(bars.timestamps[0].astype("datetime64[D]"))
            last = str(bars.timestamps[-1].astype("datetime64[D]"))
            if not first <= end_date[:10] <= last:
                err_console.print(f"[red]--end-date {end_date} is outside the data of {name}: it has bars from "
                                  f"{first} to {last}[/red]")
                raise typer.Exit(2)


@app.command()
def run(
    symbols: Annotated[str, typer.Option("--symbols", "--symbol",
                                         help="Comma-separated symbols: bundled series (SP500, NASDAQ, VIX, CRUDE), "
                                              "data-folder symbols or files.")] = "SP500,NASDAQ",
    crew: Annotated[str, typer.Option(help="full: the four agents and one decision per symbol; or one agent's "
                                           "crew: regime, strategy, meta.")] = "full",
    weights: Annotated[str | None, typer.Option(help="Portfolio weights for the risk step, summing to 1; "
                                                     "default: equal.")] = None,
    lookback: Annotated[int, typer.Option(min=60, help="Daily bars to analyse.")] = 750,
    end_date: Annotated[str | None, typer.Option(help="Analyse as of this date (YYYY-MM-DD).")] = None,
    drawdown: Annotated[float, typer.Option(min=0.0, max=1.0, help="The portfolio's current drawdown (0.1 = "
                                                                   "10%); at the stop every target is 0.")] = 0.0,
    process: Annotated[str | None, typer.Option(help="sequential (default) or hierarchical (the "
                                                     "meta-orchestrator manages).")] = None,
    max_llm_calls: Annotated[int | None, typer.Option(min=1, help="Most LLM calls for the run.")] = None,
    max_seconds: Annotated[float | None, typer.Option(min=0.001, help="Most wall-clock seconds for the run.")]
    = None,
    server_url: Annotated[str | None, typer.Option(help="ML server URL; default: start one locally.")] = None,
    llm: Annotated[str | None, typer.Option(help="'planner' (offline) or a CrewAI LLM string, e.g. openai/gpt-4o.")]
    = None,
    llm_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL for --llm.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the structured result as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run the crew: regime analyst, risk manager, strategy agent and meta-orchestrator, one decision per symbol."""
    from quantcrew.crew.crew import CREWS, PROCESSES
    from quantcrew.tools.arguments import ToolInputError, check_weights, iso_date, parse_floats, parse_names

    if crew not in CREWS or crew == "risk":
        err_console.print(f"[red]--crew must be one of full, regime, strategy, meta (risk: `quantcrew risk`), "
                          f"got {crew!r}[/red]")
        raise typer.Exit(2)
    if process is not None and process not in PROCESSES:
        err_console.print(f"[red]--process must be one of {', '.join(PROCESSES)}, got {process!r}[/red]")
        raise typer.Exit(2)
    settings = _settings(config, client__url=server_url, crew__llm=llm, crew__llm_base_url=llm_base_url,
                         crew__max_llm_calls=max_llm_calls, crew__max_seconds=max_seconds)
    try:
        names = parse_names(symbols, field="symbols")
        parsed = check_weights(parse_floats(weights, field="weights"), len(names), normalize=False) if weights \
            else None
        end = iso_date(end_date)
    except (ToolInputError, ValueError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    _check_symbols(names, settings, end)
    inputs: dict[str, Any] = {"symbols": ",".join(names), "lookback": lookback, "end_date": end}
    if crew == "full":
        inputs["drawdown"] = drawdown
        if parsed is not None:
            inputs["weights"] = ",".join(f"{w:.6g}" for w in parsed)
        title, doing = f"Decision: {', '.join(names)}", (f"Running the crew on {', '.join(names)} (regimes, risk, "
                                                          "signals, decision)...")
    else:
        inputs["symbol"] = names[0]
        title, doing = f"{crew.capitalize()} report: {names[0]}", f"Running the {crew} crew on {names[0]}..."
    _run_crew(crew, inputs, settings, config=config, as_json=as_json, title=title, doing=doing, process=process)


@app.command()
def risk(
    symbols: Annotated[str, typer.Option(help="Comma-separated symbols: bundled series, data-folder symbols or files.")]
    = "SP500,NASDAQ",
    weights: Annotated[str | None, typer.Option(help="Comma-separated weights, one per symbol, summing to 1; "
                                                     "default: equal weights.")] = None,
    normalize_weights: Annotated[bool, typer.Option(help="Rescale weights that do not sum to 1.")] = False,
    lookback: Annotated[int, typer.Option(min=60, help="Daily returns to use.")] = 1000,
    horizon_days: Annotated[int, typer.Option(min=1, max=250, help="VaR horizon in trading days.")] = 1,
    end_date: Annotated[str | None, typer.Option(help="Assess as of this date (YYYY-MM-DD).")] = None,
    server_url: Annotated[str | None, typer.Option(help="ML server URL; default: start one locally.")] = None,
    llm: Annotated[str | None, typer.Option(help="'planner' (offline) or a CrewAI LLM string, e.g. openai/gpt-4o.")]
    = None,
    llm_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL for --llm.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the structured result as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Run the risk manager on a portfolio: VaR/CVaR, factors, asset groups and anomalies."""
    from quantcrew.tools.arguments import ToolInputError, check_weights, parse_floats, parse_names

    try:  # refuse bad weights here, before a server is started for nothing
        names = parse_names(symbols, field="symbols")
        parsed = check_weights(parse_floats(weights, field="weights"), len(names), normalize=normalize_weights)
    except ToolInputError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    settings = _settings(config, client__url=server_url, crew__llm=llm, crew__llm_base_url=llm_base_url)
    inputs = {"symbols": ",".join(names), "weights": ",".join(f"{w:.6g}" for w in parsed), "lookback": lookback,
              "horizon_days": horizon_days, "end_date": end_date}
    _run_crew("risk", inputs, settings, config=config, as_json=as_json, title=f"Risk report: {', '.join(names)}",
              doing=f"Running the risk manager on {', '.join(names)} (VaR, factors, clusters, anomalies)...")


@contextmanager
def _ml_server(settings: Settings, config: Path | None) -> Iterator[None]:
    """A local ML server for the command's duration, unless ``settings.client.url`` names one."""
    from quantcrew.crew.server_process import LocalServer

    if settings.client.url is not None:
        yield
        return
    server = LocalServer(env=_child_env(settings), config_file=config, log_path=settings.home / "logs" / "server.log")
    try:
        with console.status("Starting the ML server on a free loopback port..."):
            server.start()
        settings.client.url = server.url
        err_console.print(f"[dim]ML server started at {server.url}[/dim]")  # stderr: keeps --json output pure
        yield
    finally:
        server.stop()


def _run_crew(kind: str, inputs: dict[str, Any], settings: Settings, *, config: Path | None, as_json: bool,
              title: str, doing: str, process: str | None = None) -> None:
    """Start a local ML server unless one is configured, run the crew, print its report."""
    from quantcrew.crew.kickoff import CrewRunError
    from quantcrew.crew.kickoff import run as kickoff
    from quantcrew.crew.server_process import ServerStartError

    try:
        with _ml_server(settings, config), console.status(doing) as status:
            outcome = kickoff(inputs, settings, kind=kind, process=process,
                              on_tool_result=lambda r: status.update(f"{r.tool} answered..."))
    except CrewRunError as exc:
        err_console.print(f"[red]{exc}[/red]")
        if exc.run_id is not None:
            err_console.print(f"[dim]run {exc.run_id} recorded as {exc.status} in {settings.runs_db}[/dim]")
        raise typer.Exit(3 if exc.status == "budget_exceeded" else 1) from exc
    except ServerStartError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted; stopping the ML server[/yellow]")
        raise typer.Exit(130) from None
    if as_json:
        console.print_json(json.dumps({
            "run_id": outcome.run_id, "status": outcome.status, "inputs": outcome.inputs,
            "output": outcome.output, "tool_results": [r.model_dump(mode="json") for r in outcome.tool_results],
            "views": outcome.views,
            "decision": outcome.decision.model_dump(mode="json") if outcome.decision is not None else None,
            "llm_calls": outcome.llm_calls, "duration_s": outcome.duration_s,
        }, default=str))
        return
    degraded = " [yellow](DEGRADED: fallback answer)[/yellow]" if outcome.degraded else ""
    if outcome.decision is not None:
        _print_decision(outcome, title + degraded)
    else:
        console.print(Panel(outcome.output, title=f"{title}{degraded}", expand=False))
    console.print(f"[dim]run {outcome.run_id} stored in {settings.runs_db}[/dim]")


def _print_decision(outcome: Any, title: str) -> None:
    """The decision as a table a portfolio manager can audit, then the limits and the provenance."""
    decision = outcome.decision
    regimes = {r["symbol"]: r for r in outcome.views.get("market_regimes", {}).get("regimes", [])}
    table = Table("symbol", "action", "target", "regime (p)", "followed", "size", "timing", "why", "limits",
                  title=f"{title} (as of {decision.as_of or '?'})", show_lines=True)
    for d in decision.decisions:
        r = regimes.get(d.symbol, {})
        p = f" ({r['probability']:.2f})" if r.get("probability") is not None else ""
        table.add_row(d.symbol, d.action.upper(), f"{d.target_position:+.2f}", f"{d.regime or '?'}{p}", d.followed,
                      f"{d.size:.2f}", d.timing or "", d.why, "; ".join(d.limits_applied) or "none")
    console.print(table)
    var = f"{decision.estimated_var:.2%} ({decision.var_method})" if decision.estimated_var is not None else "n/a"
    limits = decision.limits
    console.print(f"gross exposure {decision.gross_exposure:.2f}; estimated 1-day VaR95 {var}; limits: max position "
                  f"{limits.max_position:g}, max gross {limits.max_gross:g}, max VaR {limits.max_var:.1%}, drawdown "
                  f"stop {limits.drawdown_stop:.0%} (drawdown now {decision.drawdown:.1%})")
    models = ", ".join(sorted({f"{m.tool}:{m.model_id or m.method_used}" for m in decision.models}))
    console.print(f"[dim]models: {models}[/dim]")
    if decision.degraded:
        console.print("[yellow]degraded inputs:[/yellow]")
        for line in decision.degraded_inputs:
            console.print(f"[yellow]  - {line}[/yellow]")
    console.print(f"[dim]{outcome.llm_calls} LLM calls, {outcome.duration_s:.1f} s[/dim]")


@app.command()
def train(
    model: Annotated[str, typer.Option(help="rl: the four RL agents; ensemble: the LSTM + Transformer ensemble "
                                            "(walk-forward) and the execution network.")] = "rl",
    agents: Annotated[str, typer.Option(help="'all' or a comma list of conservative, aggressive, balanced, "
                                             "contrarian.")] = "all",
    algo: Annotated[str, typer.Option(help="ppo, a2c or dqn.")] = "ppo",
    timesteps: Annotated[int, typer.Option(min=1, help="Environment steps per agent.")] = 50_000,
    symbol: Annotated[str, typer.Option(help="Bundled series, data-folder symbol or file.")] = "SP500",
    train_end: Annotated[str | None, typer.Option(help="Last training date (YYYY-MM-DD); later bars are the "
                                                       "out-of-sample test span. Default: the first 70%.")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the networks, the env and the regime fit.")] = 0,
    action_mode: Annotated[str, typer.Option(help="discrete (short/flat/long) or continuous (target weight).")]
    = "discrete",
    cost_bps: Annotated[float, typer.Option(min=0.0, help="Commission per unit of turnover, in bp.")] = 1.0,
    slippage_bps: Annotated[float, typer.Option(min=0.0, help="Slippage per unit of turnover, in bp.")] = 1.0,
    server_url: Annotated[str | None, typer.Option(help="ML server URL; default: start one locally.")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Print the job id and return (needs --server-url).")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the finished job as JSON.")] = False,
    test_start: Annotated[str | None, typer.Option(help="ensemble: first date of the walk-forward test span "
                                                        "(YYYY-MM-DD); default the last 30%.")] = None,
    folds: Annotated[int, typer.Option(min=1, help="ensemble: walk-forward test folds.")] = 4,
    members: Annotated[int, typer.Option(min=1, help="ensemble: members per architecture.")] = 4,
    epochs: Annotated[int, typer.Option(min=1, help="ensemble: most epochs per fit.")] = 30,
    horizon: Annotated[int, typer.Option(min=1, help="ensemble: bars ahead whose move is classified.")] = 5,
    config: ConfigOpt = None,
) -> None:
    """Train RL agents or the ensemble on the ML server, with a progress bar fed by the job endpoint."""
    from pydantic import ValidationError

    from quantcrew.data import DataError, load_symbol, to_payload_dict
    from quantcrew.ml_server.schemas.ensemble import EnsembleTrainRequest
    from quantcrew.ml_server.schemas.rl import RL_AGENTS, RLTrainRequest
    from quantcrew.tools.arguments import ToolInputError, parse_names

    settings = _settings(config, client__url=server_url)
    if no_wait and settings.client.url is None:
        err_console.print("[red]--no-wait needs --server-url: a local server stops when this command ends[/red]")
        raise typer.Exit(2)
    if model not in ("rl", "ensemble"):
        err_console.print(f"[red]--model must be 'rl' or 'ensemble', got {model!r}[/red]")
        raise typer.Exit(2)
    request: RLTrainRequest | EnsembleTrainRequest
    try:  # refuse bad arguments before a server is started for nothing
        bars = load_symbol(symbol, data_dir=settings.data.data_dir, max_gap_days=settings.data.max_gap_days)
        if model == "ensemble":
            request = EnsembleTrainRequest.model_validate({
                "data": to_payload_dict(bars), "symbol": symbol, "test_start": test_start, "folds": folds,
                "members": members, "epochs": epochs, "horizon": horizon, "seed": seed,
            })
        else:
            names = list(RL_AGENTS) if agents.strip().lower() == "all" else parse_names(agents, field="agents")
            request = RLTrainRequest.model_validate({
                "data": to_payload_dict(bars), "symbol": symbol, "agents": [n.lower() for n in names],
                "algorithm": algo.lower(), "timesteps": timesteps, "train_end": train_end, "seed": seed,
                "action_mode": action_mode, "cost_bps": cost_bps, "slippage_bps": slippage_bps,
            })
    except (ToolInputError, DataError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        err_console.print(f"[red]{where}: {first['msg']}[/red]")
        raise typer.Exit(2) from exc
    _train(request, settings, config=config, no_wait=no_wait, as_json=as_json)


def _train(request: Any, settings: Settings, *, config: Path | None, no_wait: bool, as_json: bool) -> None:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from quantcrew.crew.server_process import ServerStartError
    from quantcrew.ml_server.schemas.ensemble import EnsembleTrainRequest
    from quantcrew.ml_server.schemas.jobs import JobInfo
    from quantcrew.tools.client import make_client
    from quantcrew.tools.errors import MLClientError

    ensemble = isinstance(request, EnsembleTrainRequest)
    job: JobInfo | None = None
    try:
        with _ml_server(settings, config), make_client(settings.client) as client:
            job = client.ensemble_train(request) if ensemble else client.rl_train(request)
            if no_wait:
                console.print(f"job {job.job_id} queued; follow it with GET /v1/jobs/{job.job_id}")
                return
            unit = "epochs" if ensemble else "steps"
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/"
                       "{task.total:,.0f} " + unit), TextColumn("{task.fields[reward]}"), TimeElapsedColumn(),
                       TimeRemainingColumn())
            with Progress(*columns, console=console, transient=not as_json) as bar:
                steps = 0 if isinstance(request, EnsembleTrainRequest) else request.timesteps * len(request.agents)
                task = bar.add_task("queued", total=steps or 1, reward="")  # the job reports the real total

                def show(info: JobInfo) -> None:
                    metrics = info.progress.metrics
                    reward = metrics.get("episode_reward")
                    note = ("" if reward is None else f"episode reward {reward:+.3g}") if not ensemble else (
                        "" if "val_loss" not in metrics else f"val loss {metrics['val_loss']:.4f}")
                    bar.update(task, completed=info.progress.done, total=info.progress.total or steps or 1,
                               description=info.progress.message or info.status, reward=note)

                try:
                    job = client.wait_for_job(job.job_id, poll_s=0.5, on_progress=show)
                except KeyboardInterrupt:
                    client.cancel_job(job.job_id)
                    err_console.print(f"[yellow]interrupted: job {job.job_id} cancelled[/yellow]")
                    raise typer.Exit(130) from None
    except (MLClientError, ServerStartError) as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    assert job is not None
    if as_json:
        console.print_json(job.model_dump_json())
    if job.status != "succeeded":
        message = job.error.message if job.error is not None else job.status
        err_console.print(f"[red]training job {job.job_id} {job.status}: {message}[/red]")
        raise typer.Exit(1)
    if as_json:
        return
    if ensemble:
        _print_ensemble_result(job.result)
    else:
        _print_rl_result(job.result)


def _print_ensemble_result(raw: Any) -> None:
    from quantcrew.ml_server.schemas.ensemble import EnsembleTrainResult

    result = EnsembleTrainResult.model_validate(raw)
    table = Table("method", "rows", "accuracy", "ECE (15 bins)", "Brier", "NLL",
                  title=f"Out of sample, walk-forward ({len(result.folds)} folds; "
                        f"{result.folds[0].test_start} .. {result.folds[-1].test_end})")
    for r in result.out_of_sample:
        table.add_row(r.method, str(r.n), f"{r.accuracy:.3f}", f"{r.ece:.4f}", f"{r.brier:.4f}", f"{r.nll:.4f}")
    console.print(table)
    m = result.model
    console.print(f"ensemble {m.name} v{m.version} ({m.model_id}) deployed as {result.deployment.stage}"
                  + (f"; execution network {result.execution_model.model_id}" if result.execution_model else "")
                  + f"; {result.training_seconds:.0f} s")


def _print_rl_result(raw: Any) -> None:
    from quantcrew.ml_server.schemas.rl import RLTrainResult

    result = RLTrainResult.model_validate(raw)
    table = Table("agent", "model_id", "seconds", "total return", "Sharpe", "max DD", "specialty", "beats B&H",
                  title=f"Out of sample {result.test_start} .. {result.test_end} (after costs)")
    for p in result.policies:
        e = p.evaluation
        if e is None:
            continue
        table.add_row(p.agent, p.model_id, f"{p.train_seconds:.1f}", f"{e.metrics.total_return:+.1%}",
                      f"{e.metrics.sharpe:.2f}", f"{e.metrics.max_drawdown:.1%}", e.specialty_metric,
                      "yes" if e.beats_buy_and_hold else "no")
    for name, m in result.benchmarks.items():
        table.add_row(name, "", "", f"{m.total_return:+.1%}", f"{m.sharpe:.2f}", f"{m.max_drawdown:.1%}", "", "")
    console.print(table)


def _child_env(settings: Settings) -> dict[str, str]:
    """Settings the child server must share with us (home decides registry and artifacts)."""
    env = {"QUANTCREW_HOME": str(settings.home)}
    if settings.server.api_key is not None:
        env["QUANTCREW_SERVER__API_KEY"] = settings.server.api_key.get_secret_value()
    return env


@app.command()
def server(
    host: Annotated[str | None, typer.Option(help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the ML server in the foreground (same as quantcrew-server)."""
    from quantcrew.ml_server.__main__ import main as server_main

    argv: list[str] = []
    if host:
        argv += ["--host", host]
    if port is not None:
        argv += ["--port", str(port)]
    if config is not None:
        argv += ["--config", str(config)]
    raise typer.Exit(server_main(argv))


@runs_app.command("list")
def runs_list(limit: Annotated[int, typer.Option(min=1)] = 20, config: ConfigOpt = None) -> None:
    """The latest runs."""
    from quantcrew.crew.runs import RunsStore

    settings = _settings(config)
    store = RunsStore(settings.runs_db)
    table = Table("run_id", "kind", "status", "started_at", "seconds", "LLM calls", "degraded", "inputs", "error")
    for row in store.list_runs(limit):
        seconds = f"{row['duration_s']:.1f}" if row.get("duration_s") is not None else ""
        degraded = "" if row.get("degraded") is None else ("yes" if row["degraded"] else "no")
        table.add_row(row["run_id"], row["kind"], row["status"], row["started_at"], seconds,
                      str(row.get("llm_calls") or ""), degraded, row["inputs"], row.get("error") or "")
    store.close()
    console.print(table)


@runs_app.command("show")
def runs_show(run_id: str, config: ConfigOpt = None) -> None:
    """One run with its tool calls, as JSON."""
    from quantcrew.crew.runs import RunsStore

    settings = _settings(config)
    store = RunsStore(settings.runs_db)
    found = store.get_run(run_id)
    store.close()
    if found is None:
        err_console.print(f"[red]no run '{run_id}' in {settings.runs_db}[/red]")
        raise typer.Exit(1)
    console.print_json(json.dumps(found, default=str))


app.command("backtest")(backtest_command)
app.add_typer(schedule_app, name="schedule")
app.command("scheduler")(scheduler_command)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="quantcrew")


if __name__ == "__main__":  # pragma: no cover
    main()
