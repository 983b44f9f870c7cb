"""``quantcrew run``: the crew on one or more symbols, one decision per symbol (or one agent's report).

:func:`run_crew` is shared with ``quantcrew risk``: it starts a local ML server unless one is
configured, kicks the crew off and prints its report.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

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
from quantcrew.config.settings import Settings

__all__ = ["PROCESSES", "RUN_CREWS", "print_decision", "run", "run_crew", "say_untrained"]

RUN_CREWS = ("full", "regime", "strategy", "meta")
"""The crews ``quantcrew run`` starts (``risk`` has its own command). Named here, not read from the crew
module, so that a bad ``--crew`` is refused without loading CrewAI, which then loads while the server boots."""
PROCESSES = ("sequential", "hierarchical")
"""The ``--process`` choices, the crew module's ``PROCESSES``."""


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
    allow_degraded: AllowDegradedOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Run the crew: regime analyst, risk manager, strategy agent and meta-orchestrator, one decision per symbol."""
    from quantcrew.tools.arguments import ToolInputError, check_weights, iso_date, parse_floats, parse_names

    if crew not in RUN_CREWS:
        fail(err_console, f"--crew must be one of {', '.join(RUN_CREWS)} (risk: `quantcrew risk`), got {crew!r}",
             ExitCode.BAD_INPUT)
    if process is not None and process not in PROCESSES:
        fail(err_console, f"--process must be one of {', '.join(PROCESSES)}, got {process!r}", ExitCode.BAD_INPUT)
    settings = load_cli_settings(config, client__url=server_url, crew__llm=llm, crew__llm_base_url=llm_base_url,
                                 crew__max_llm_calls=max_llm_calls, crew__max_seconds=max_seconds)
    try:
        names = parse_names(symbols, field="symbols")
        parsed = check_weights(parse_floats(weights, field="weights"), len(names), normalize=False) if weights \
            else None
        end = iso_date(end_date)
    except (ToolInputError, ValueError) as exc:
        fail(err_console, str(exc), ExitCode.BAD_INPUT)
    check_symbols(names, settings, end)
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
    run_crew(crew, inputs, settings, config=config, as_json=as_json, title=title, doing=doing, process=process,
             allow_degraded=allow_degraded)


def run_crew(kind: str, inputs: dict[str, Any], settings: Settings, *, config: Path | None, as_json: bool,
             title: str, doing: str, process: str | None = None, allow_degraded: bool = False) -> None:
    """Start a local ML server unless one is configured, run the crew, print its report.

    Args:
        kind: The crew (``full``, ``risk``, ``regime``...).
        inputs: Its kickoff inputs.
        settings: Settings with the command's options applied.
        config: The ``--config`` file, passed on to a local server.
        as_json: Print the structured result as JSON instead of a report.
        title: The report's title.
        doing: The status line shown while the crew runs.
        process: ``sequential`` or ``hierarchical``; None for the crew's own.
        allow_degraded: Exit 0 for a ``degraded`` run (it is still stored and printed as degraded).

    Raises:
        typer.Exit: the run's code from :mod:`quantcrew.cli.exits`: 4 degraded (0 with
            ``allow_degraded``), 5 API key refused, 3 over the run budget, 1 when the run or the
            server failed, 130 on Ctrl-C.
    """
    from quantcrew.crew.server_process import ServerStartError

    try:
        # CrewAI takes seconds to import: it loads while the child server boots
        with ml_server(settings, config, meanwhile=_load_crew):
            outcome = _kickoff(kind, inputs, settings, doing=doing, process=process)
    except ServerStartError as exc:
        fail(err_console, str(exc), ExitCode.FAILED)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted; stopping the ML server[/yellow]")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    _print_outcome(outcome, settings, title=title, as_json=as_json)
    code = exit_for_status(outcome.status, allow_degraded=allow_degraded)
    if outcome.status == "degraded":
        accepted = "accepted by --allow-degraded" if allow_degraded else \
            f"exit {int(ExitCode.DEGRADED)}; --allow-degraded accepts it"
        err_console.print(f"run {outcome.run_id} is DEGRADED ({accepted})", style="yellow", markup=False)
    if code is not ExitCode.OK:
        raise typer.Exit(code)


def _print_outcome(outcome: Any, settings: Settings, *, title: str, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps({
            "run_id": outcome.run_id, "status": outcome.status, "inputs": outcome.inputs,
            "output": outcome.output, "tool_results": [r.model_dump(mode="json") for r in outcome.tool_results],
            "views": outcome.views,
            "decision": outcome.decision.model_dump(mode="json") if outcome.decision is not None else None,
            "llm_calls": outcome.llm_calls, "duration_s": outcome.duration_s,
            "degraded": outcome.degraded, "gated": outcome.gated, "degraded_notes": outcome.degraded_notes,
            "settled": outcome.settled.model_dump(mode="json") if outcome.settled is not None else None,
        }, default=str))
        return
    degraded = " [yellow](DEGRADED: fallback answer)[/yellow]" if outcome.degraded else ""
    if outcome.decision is not None:
        print_decision(outcome, escape(title) + degraded)
    else:
        console.print(Panel(Text(outcome.output), title=f"{escape(title)}{degraded}", expand=False))
        for line in outcome.degraded_notes:
            console.print(f"DEGRADED: {line}", style="yellow", markup=False)
    console.print(f"run {outcome.run_id} stored in {settings.runs_db}", style="dim", markup=False)


def _load_crew() -> None:
    import quantcrew.crew.kickoff  # noqa: F401 - imported for its cost, paid while the server boots


def _kickoff(kind: str, inputs: dict[str, Any], settings: Settings, *, doing: str, process: str | None) -> Any:
    """The crew's run on the ready server, with a status line; its outcome.

    Raises:
        typer.Exit: 3 over the run budget, 1 when the run failed (the stored run is named).
    """
    from quantcrew.crew.kickoff import CrewRunError
    from quantcrew.crew.kickoff import run as kickoff

    try:
        with console.status(doing) as status:
            if kind in ("full", "strategy", "meta"):
                say_untrained(settings, str(inputs.get("symbols") or inputs.get("symbol") or ""))
            return kickoff(inputs, settings, kind=kind, process=process,
                           on_tool_result=lambda r: status.update(f"{r.tool} answered..."))
    except CrewRunError as exc:
        err_console.print(str(exc), style="red", markup=False)
        if exc.run_id is not None:
            err_console.print(f"run {exc.run_id} recorded as {exc.status} in {settings.runs_db}", style="dim",
                              markup=False)
        raise typer.Exit(exit_for_status(exc.status)) from exc


def say_untrained(settings: Settings, symbols: str) -> None:
    """One line per symbol the home has no trained models for: what will answer instead, and the fix."""
    from quantcrew.data import load_symbol
    from quantcrew.tools.client import make_client
    from quantcrew.tools.errors import MLClientError

    try:
        with make_client(settings.client) as client:
            models = client.list_models()
    except MLClientError:
        return  # the tools say so themselves, each marked degraded
    for name in [s.strip() for s in symbols.split(",") if s.strip()]:
        try:
            symbol = load_symbol(name, data_dir=settings.data.data_dir, max_gap_days=settings.data.max_gap_days).symbol
        except Exception:  # noqa: BLE001 - the run itself reports bad data
            continue
        trained = {m.family for m in models if str(m.metadata.get("symbol") or "").upper() == symbol.upper()}
        missing = [what for family, what in (("rl", "the RL agents"), ("ensemble", "the ensemble"),
                                             ("execution", "the execution network")) if family not in trained]
        if missing:
            what = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
            err_console.print(f"{symbol}: nothing trained on this home for {what}: rules will answer for them "
                              f"(degraded); `quantcrew setup --symbols {symbol}` trains them.", style="yellow",
                              markup=False)


def print_decision(outcome: Any, title: str) -> None:
    """The decision as a table a portfolio manager can audit, then the limits and the provenance."""
    decision = outcome.decision
    regimes = {r["symbol"]: r for r in outcome.views.get("market_regimes", {}).get("regimes", [])}
    table = Table("symbol", "action", "target", "regime (p)", "followed", "size", "timing", "why", "limits",
                  title=f"{title} (as of {decision.as_of or '?'})", title_justify="left", show_lines=True)
    for d in decision.decisions:
        r = regimes.get(d.symbol, {})
        p = f" ({r['probability']:.2f})" if r.get("probability") is not None else ""
        cells = (d.symbol, d.action.upper(), f"{d.target_position:+.2f}", f"{d.regime or '?'}{p}", d.followed,
                 f"{d.size:.2f}", d.timing or "", d.why, "; ".join(d.limits_applied) or "none")
        table.add_row(*(Text(cell) for cell in cells))  # text, not markup: a file symbol may hold brackets
    console.print(table)
    var = f"{decision.estimated_var:.2%} ({decision.var_method})" if decision.estimated_var is not None else "n/a"
    limits = decision.limits
    console.print(f"gross exposure {decision.gross_exposure:.2f}; estimated 1-day VaR95 {var}; limits: max position "
                  f"{limits.max_position:g}, max gross {limits.max_gross:g}, max VaR {limits.max_var:.1%}, drawdown "
                  f"stop {limits.drawdown_stop:.0%} (drawdown now {decision.drawdown:.1%})", markup=False)
    models = ", ".join(sorted({f"{m.tool}:{m.model_id or m.method_used}" for m in decision.models}))
    console.print(f"models: {models}", style="dim", markup=False)
    if decision.gated_inputs:
        console.print("gated (a trained model failed its quality gate; a named rule answered by design):")
        for line in decision.gated_inputs:
            console.print(f"  - {line}", markup=False)
    if decision.degraded:
        console.print("[yellow]DEGRADED inputs (the model asked for could not answer):[/yellow]")
        for line in decision.degraded_inputs:
            console.print(f"  - {line}", style="yellow", markup=False)
    for line in getattr(outcome, "degraded_notes", []):
        console.print(f"DEGRADED: {line}", style="yellow", markup=False)
    if getattr(outcome, "settled", None) is not None:
        console.print(outcome.settled.summary(), style="dim", markup=False)
    console.print(f"[dim]{outcome.llm_calls} LLM calls, {outcome.duration_s:.1f} s[/dim]")
