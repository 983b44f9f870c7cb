"""``quantcrew risk``: the risk manager on a portfolio (VaR/CVaR, factors, asset groups, anomalies)."""

from __future__ import annotations

from typing import Annotated

import typer

from quantcrew.cli.common import AllowDegradedOpt, ConfigOpt, check_symbols, err_console, load_cli_settings
from quantcrew.cli.exits import ExitCode, fail
from quantcrew.cli.run import run_crew

__all__ = ["risk"]


def risk(
    symbols: Annotated[str, typer.Option("--symbols", "--symbol",
                                         help="Comma-separated symbols: bundled series, data-folder symbols or "
                                              "files.")] = "SP500,NASDAQ",
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
    allow_degraded: AllowDegradedOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Run the risk manager on a portfolio: VaR/CVaR, factors, asset groups and anomalies."""
    from quantcrew.tools.arguments import ToolInputError, check_weights, iso_date, parse_floats, parse_names

    try:  # refuse bad weights here, before a server is started for nothing
        names = parse_names(symbols, field="symbols")
        parsed = check_weights(parse_floats(weights, field="weights"), len(names), normalize=normalize_weights)
        end = iso_date(end_date)
    except (ToolInputError, ValueError) as exc:
        fail(err_console, str(exc), ExitCode.BAD_INPUT)
    settings = load_cli_settings(config, client__url=server_url, crew__llm=llm, crew__llm_base_url=llm_base_url)
    check_symbols(names, settings, end)  # unknown symbols, or an end date outside a symbol's data: exit 2 now
    inputs = {"symbols": ",".join(names), "weights": ",".join(f"{w:.6g}" for w in parsed), "lookback": lookback,
              "horizon_days": horizon_days, "end_date": end}
    run_crew("risk", inputs, settings, config=config, as_json=as_json, title=f"Risk report: {', '.join(names)}",
             doing=f"Running the risk manager on {', '.join(names)} (VaR, factors, clusters, anomalies)...",
             allow_degraded=allow_degraded)
