"""``quantcrew flow run | resume | show``: the daily pipeline as a crewAI Flow, its state kept in
``<home>/flows.db`` by its flow id.

Exit codes are :mod:`quantcrew.cli.exits`'s, from the flow's status as for a run: 0 succeeded, 4 degraded
(0 with ``--allow-degraded``), 5 the API key refused, 3 over the LLM budget, 1 failed, 2 bad input (an
option, a symbol, a date, an unknown flow id: nothing ran), 130 interrupted. ``show`` exits 0 when the
flow is found.
"""

from __future__ import annotations

import contextlib
import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from quantcrew.cli.common import (
    AllowDegradedOpt,
    ConfigOpt,
    check_symbols,
    console,
    err_console,
    load_cli_settings,
    ml_server,
)
from quantcrew.cli.exits import ExitCode, exit_for_status, fail

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings
    from quantcrew.crew.flow_state import DailyState

__all__ = ["flow_app", "flow_resume", "flow_run", "flow_show"]

flow_app = typer.Typer(help="The daily pipeline as a crewAI Flow (regime, risk, strategy, decision, outcomes), "
                            "its state kept by flow id.", no_args_is_help=True)

ServerUrlOpt = Annotated[str | None, typer.Option(help="ML server URL; default: start one locally.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the flow's state as JSON.")]


@flow_app.command("run")
def flow_run(
    symbols: Annotated[str, typer.Option("--symbols", "--symbol",
                                         help="Comma-separated symbols: bundled series (SP500, NASDAQ, VIX, CRUDE), "
                                              "data-folder symbols or files.")] = "SP500,NASDAQ",
    end_date: Annotated[str | None, typer.Option("--end-date", help="Decide as of this date (YYYY-MM-DD); default: "
                                                                    "the latest bar.")] = None,
    lookback: Annotated[int, typer.Option(min=60, max=20_000, help="Daily bars to analyse.")] = 750,
    weights: Annotated[str | None, typer.Option(help="Portfolio weights for the risk step, summing to 1; "
                                                     "default: equal.")] = None,
    drawdown: Annotated[float, typer.Option(min=0.0, max=1.0, help="The portfolio's current drawdown (0.1 = "
                                                                   "10%); at the stop every target is 0.")] = 0.0,
    max_llm_calls: Annotated[int | None, typer.Option(min=1, help="Most LLM calls for the flow.")] = None,
    max_seconds: Annotated[float | None, typer.Option(min=0.001, help="Most wall-clock seconds for the flow.")]
    = None,
    server_url: ServerUrlOpt = None,
    llm: Annotated[str | None, typer.Option(help="'planner' (offline) or a CrewAI LLM string, e.g. openai/gpt-4o.")]
    = None,
    llm_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL for --llm.")] = None,
    as_json: JsonOpt = False,
    allow_degraded: AllowDegradedOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Run the daily flow on the symbols: one decision per symbol, every step's state kept by the flow's id."""
    from quantcrew.tools.arguments import ToolInputError, check_weights, iso_date, parse_floats, parse_names

    try:  # refused here, before a server is started for nothing
        names = parse_names(symbols, field="symbols")
        parsed = check_weights(parse_floats(weights, field="weights"), len(names), normalize=False) if weights \
            else None
        end = iso_date(end_date)
    except (ToolInputError, ValueError) as exc:
        fail(err_console, str(exc), ExitCode.BAD_INPUT)
    settings = load_cli_settings(config, client__url=server_url, crew__llm=llm, crew__llm_base_url=llm_base_url,
                                 crew__max_llm_calls=max_llm_calls, crew__max_seconds=max_seconds)
    check_symbols(names, settings, end)
    inputs: dict[str, Any] = {"symbols": names, "as_of": end, "lookback": lookback, "drawdown": drawdown,
                              "weights": parsed}
    _kickoff(settings, inputs, config=config, as_json=as_json, allow_degraded=allow_degraded,
             doing=f"Running the daily flow on {', '.join(names)} (regime, risk, strategy, decision, outcomes)...")


@flow_app.command("resume")
def flow_resume(
    flow_id: Annotated[str, typer.Argument(help="The flow's id (`quantcrew flow run` prints it).")],
    server_url: ServerUrlOpt = None,
    as_json: JsonOpt = False,
    allow_degraded: AllowDegradedOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Resume a flow by its id: the steps that finished keep their answers, the others run."""
    from quantcrew.crew.daily_flow import load_state

    settings = load_cli_settings(config, client__url=server_url)
    if load_state(settings, flow_id) is None:
        fail(err_console, f"no flow '{flow_id}' in {settings.home / 'flows.db'}", ExitCode.BAD_INPUT)
    _kickoff(settings, {"id": flow_id}, config=config, as_json=as_json, allow_degraded=allow_degraded,
             doing=f"Resuming the daily flow {flow_id}...")


@flow_app.command("show")
def flow_show(
    flow_id: Annotated[str, typer.Argument(help="The flow's id.")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """A flow's latest state: its status, each step, the decision, why it is degraded."""
    from quantcrew.crew.daily_flow import flows_db, load_state

    settings = load_cli_settings(config)
    state = load_state(settings, flow_id)
    if state is None:
        fail(err_console, f"no flow '{flow_id}' in {flows_db(settings)}", ExitCode.BAD_INPUT)
    _print(state, as_json=as_json)


def _kickoff(settings: Settings, inputs: dict[str, Any], *, config: Any, as_json: bool, allow_degraded: bool,
             doing: str) -> None:
    """Start a local ML server unless one is configured, kick the flow off, print its state, exit with its code."""
    from quantcrew.crew.server_process import ServerStartError

    try:
        with ml_server(settings, config, meanwhile=_load_flow):
            from quantcrew.crew.daily_flow import DailyFlow

            # crewAI prints its flow messages ("Loading flow state ...") on stdout: they go to stderr, so that
            # stdout holds the report (or the JSON) alone
            with console.status(doing), contextlib.redirect_stdout(sys.stderr):
                state: DailyState = DailyFlow(settings).kickoff(inputs=inputs)
    except ServerStartError as exc:
        fail(err_console, str(exc), ExitCode.FAILED)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted; stopping the ML server[/yellow]")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    _print(state, as_json=as_json)
    code = exit_for_status(state.status, allow_degraded=allow_degraded)
    if state.status == "degraded":
        accepted = "accepted by --allow-degraded" if allow_degraded else \
            f"exit {int(ExitCode.DEGRADED)}; --allow-degraded accepts it"
        err_console.print(f"flow {state.id} is DEGRADED ({accepted})", style="yellow", markup=False)
    err_console.print(f"flow {state.id} kept in {settings.home / 'flows.db'}; `quantcrew flow show {state.id}`",
                      style="dim", markup=False)
    if code is not ExitCode.OK:
        raise typer.Exit(code)


def _load_flow() -> None:
    import quantcrew.crew.daily_flow  # noqa: F401 - imported for its cost, paid while the server boots


def _print(state: DailyState, *, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(state.model_dump(mode="json")))
        return
    style = {"succeeded": "green", "degraded": "yellow"}.get(state.status, "red")
    for n, line in enumerate(state.summary().splitlines()):
        console.print(line, style=style if n == 0 or line.startswith(("DEGRADED", "ERROR")) else None, markup=False,
                      highlight=False)
