"""``quantcrew train``: train the RL agents or the ensemble on the ML server, with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from quantcrew.cli.common import ConfigOpt, console, err_console, load_cli_settings, ml_server
from quantcrew.config.settings import Settings

__all__ = ["train"]


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

    settings = load_cli_settings(config, client__url=server_url)
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
        with ml_server(settings, config), make_client(settings.client) as client:
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
