"""``quantcrew train``: train the RL agents or the ensemble on the ML server, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from quantcrew.cli.common import ConfigOpt, console, err_console, load_cli_settings, ml_server
from quantcrew.cli.exits import ExitCode, exit_for_error, fail
from quantcrew.config.settings import Settings

__all__ = ["train"]


def train(
    model: Annotated[str, typer.Option(help="rl: the four RL agents; ensemble: the LSTM + Transformer ensemble "
                                            "(walk-forward) and the execution network.")] = "rl",
    agents: Annotated[str, typer.Option(help="'all' or a comma list of conservative, aggressive, balanced, "
                                             "contrarian.")] = "all",
    algo: Annotated[str, typer.Option(help="ppo, a2c or dqn.")] = "ppo",
    timesteps: Annotated[int, typer.Option(min=1, help="Environment steps per run (each agent: seeds x 2 reward "
                                                       "scales runs, the best on validation bars kept).")] = 20_000,
    seeds: Annotated[int, typer.Option(min=1, max=10, help="Seeds per configuration of each agent.")] = 3,
    symbol: Annotated[str, typer.Option("--symbols", "--symbol",
                                        help="One symbol: bundled series, data-folder symbol or file.")] = "SP500",
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

    settings = load_cli_settings(config, client__url=server_url)
    if no_wait and settings.client.url is None:
        fail(err_console, "--no-wait needs --server-url: a local server stops when this command ends",
             ExitCode.BAD_INPUT)
    if model not in ("rl", "ensemble"):
        fail(err_console, f"--model must be 'rl' or 'ensemble', got {model!r}", ExitCode.BAD_INPUT)
    if "," in symbol:
        fail(err_console, f"--symbols: train takes one symbol at a time, got {symbol!r} (`quantcrew setup "
             "--symbols A,B` trains several)", ExitCode.BAD_INPUT)
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
                "algorithm": algo.lower(), "timesteps": timesteps, "seeds": seeds, "train_end": train_end, "seed": seed,
                "action_mode": action_mode, "cost_bps": cost_bps, "slippage_bps": slippage_bps,
            })
    except (ToolInputError, DataError) as exc:
        fail(err_console, str(exc), ExitCode.BAD_INPUT)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        fail(err_console, f"{where}: {first['msg']}", ExitCode.BAD_INPUT)
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
        with ml_server(settings, config), make_client(settings.client) as client:
            job = client.ensemble_train(request) if ensemble else client.rl_train(request)
            if no_wait:
                console.print(f"job {job.job_id} queued; follow it with GET /v1/jobs/{job.job_id}")
                return
            unit = "epochs" if ensemble else "steps"
            columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}/"
                       "{task.total:,.0f} " + unit), TextColumn("{task.fields[reward]}"), TimeElapsedColumn(),
                       TimeRemainingColumn())
            # with --json, stdout carries the JSON alone: the bar goes to stderr and is cleared when done
            with Progress(*columns, console=err_console if as_json else console, transient=True) as bar:
                steps = (0 if isinstance(request, EnsembleTrainRequest)
                         else request.timesteps * request.runs * len(request.agents))
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
                    raise typer.Exit(ExitCode.INTERRUPTED) from None
    except (MLClientError, ServerStartError) as exc:
        fail(err_console, str(exc), exit_for_error(exc))
    assert job is not None
    if as_json:
        console.print_json(job.model_dump_json())
    if job.status != "succeeded":
        message = job.error.message if job.error is not None else job.status
        fail(err_console, f"training job {job.job_id} {job.status}: {message}", ExitCode.FAILED)
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
    console.print(f"ensemble {m.name} v{m.version} ({m.model_id}): {_gate_line(result.gate, result.deployment)}",
                  markup=False)
    if result.execution_model is not None:
        e = result.execution_model
        console.print(f"execution network {e.name} v{e.version} ({e.model_id}): "
                      f"{_gate_line(result.execution_gate, result.execution_deployment)}", markup=False)
    console.print(f"{result.training_seconds:.0f} s", style="dim")


def _gate_line(gate: Any, deployment: Any) -> str:
    """``deployed as full; gate PASSED: ...`` or ``not deployed (gated): ...``."""
    verdict = "no gate verdict" if gate is None else f"gate {'PASSED' if gate.passed else 'failed'}: {gate.summary}"
    if deployment is None:
        return f"not deployed (gated; a rule answers in its place); {verdict}"
    return f"deployed as {deployment.stage}; {verdict}"


def _print_rl_result(raw: Any) -> None:
    from quantcrew.ml_server.schemas.rl import RLTrainResult

    result = RLTrainResult.model_validate(raw)
    table = Table("agent", "model_id", "seconds", "total return", "Sharpe", "max DD", "specialty", "gate",
                  "Sharpe - B&H (90% CI)", "deployed",
                  title=f"Out of sample {result.test_start} .. {result.test_end} (after costs)")
    for p in result.policies:
        e = p.evaluation
        if e is None:
            continue
        interval = p.gate.interval if p.gate is not None else None
        table.add_row(p.agent, p.model_id, f"{p.train_seconds:.1f}", f"{e.metrics.total_return:+.1%}",
                      f"{e.metrics.sharpe:.2f}", f"{e.metrics.max_drawdown:.1%}", e.specialty_metric,
                      _gate_cell(p.gate), "" if interval is None else f"[{interval[0]:+.2f}, {interval[1]:+.2f}]",
                      "yes" if p.deployed else "no")
    for name, m in result.benchmarks.items():
        table.add_row(name, "", "", f"{m.total_return:+.1%}", f"{m.sharpe:.2f}", f"{m.max_drawdown:.1%}", "", "", "",
                      "")
    console.print(table)
    undeployed = [p.agent for p in result.policies if not p.deployed]
    if undeployed:
        console.print(f"not deployed: {', '.join(undeployed)}; the crew keeps the policy deployed before for this "
                      "symbol, or the agent's rule")


_SHORT = {"Sharpe after costs": "Sharpe", "buy-and-hold": "B&H"}


def _gate_cell(gate: Any) -> str:
    """``PASSED: Sharpe 0.52 > B&H 0.41`` or ``failed: Sharpe -0.12 <= B&H 0.41, <= flat 0.00; held 3% <= 10%``."""
    if gate is None:
        return "no verdict"
    deciding = [c for c in gate.checks if not c.name.endswith("_reported")]
    if gate.passed:
        shown = [c for c in deciding if c.name == "sharpe_above_buy_and_hold"] or deciding[:1]
    else:
        shown = [c for c in deciding if not c.passed]
    parts: list[str] = []
    last: tuple[str, float | None] | None = None
    for c in shown:
        key = (c.measure, c.value)
        if key == last and c.value is not None and c.baseline_value is not None:
            baseline = _SHORT.get(c.baseline, c.baseline)
            extra = f"{_op(c.passed, c.value, c.baseline_value)} {baseline} {_num(c.baseline_value)}"
            if extra not in parts[-1]:
                parts[-1] += f", {extra}"
        else:
            parts.append(_check_cell(c))
        last = key
    return ("PASSED: " if gate.passed else "failed: ") + "; ".join(parts)


def _check_cell(c: Any) -> str:
    value = 0.0 if c.value is None else c.value
    base = 0.0 if c.baseline_value is None else c.baseline_value
    op = _op(c.passed, value, base)
    if c.name == "position_held":
        return f"held {value:.0%} {op} {base:.0%} of bars"
    if c.value is None or c.baseline_value is None:
        return f"{c.measure} not measurable"
    measure, baseline = _SHORT.get(c.measure, c.measure), _SHORT.get(c.baseline, c.baseline)
    return f"{measure} {_num(value)} {op} {baseline} {_num(base)}"


def _op(passed: bool, value: float, base: float) -> str:
    """The comparison that holds between the two values, as the verdict reads it."""
    if passed:
        return ">" if value > base else "<" if value < base else ">="
    return "<=" if value <= base else ">="


def _num(x: float) -> str:
    return f"{x:.2g}" if x != 0 and abs(x) < 0.01 else f"{x:.2f}"
