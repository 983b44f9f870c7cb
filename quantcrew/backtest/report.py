"""An HTML report of a walk-forward run (plots embedded as base64 PNG) and a PNG of its equity curve.

matplotlib is imported inside :func:`write_report` only, with the non-interactive Agg backend,
so importing this module costs nothing and never opens a window.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from quantcrew.backtest.comparison import LEVEL as _LEVEL
from quantcrew.backtest.walk_forward import FILL_TEXT
from quantcrew.backtest.walk_forward_result import WalkForwardResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["REGIME_COLOURS", "REPORT_FILES", "stats_headers", "stats_rows", "verdict_rows", "write_report",
           "yearly_rows"]

REGIME_COLOURS: dict[str, str] = {"bull": "#2ca02c", "bear": "#d62728", "sideways": "#7f7f7f", "volatile": "#ff7f0e"}
"""Shading of each regime label on the equity curve."""

_BASELINE_COLOURS = ("#555555", "#bcbd22", "#17becf")
_AGENT_COLOURS = {"conservative": "#1f77b4", "aggressive": "#d62728", "balanced": "#9467bd", "contrarian": "#8c564b"}


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.1%}"


def _vol(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.1%}"


def _num(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.2f}"


def stats_headers(result: WalkForwardResult) -> list[str]:
    """Column headers of :func:`stats_rows`: the statistic, the strategy, then each baseline."""
    return ["", "Strategy", *(b.label for b in result.baselines.values())]


def stats_rows(result: WalkForwardResult) -> list[list[str]]:
    """(statistic, strategy, each baseline) rows, formatted: the table of the report and of the CLI."""
    runs = [result.stats, *(b.stats for b in result.baselines.values())]
    blank = [""] * len(result.baselines)
    psr = [_num(result.benchmark_psr) if k == "buy_and_hold" else "" for k in result.baselines]
    return [
        ["Total return", *(_pct(s.total_return) for s in runs)],
        ["Annual return", *(_pct(s.annual_return) for s in runs)],
        ["Annual volatility", *(_vol(s.annual_volatility) for s in runs)],
        ["Sharpe", *(_num(s.sharpe) for s in runs)],
        ["Sortino", *(_num(s.sortino) for s in runs)],
        ["Max drawdown", *(_pct(-s.max_drawdown) for s in runs)],
        ["Turnover (per year)", *(_num(s.turnover) for s in runs)],
        ["Trades", *(str(s.n_trades) for s in runs)],
        ["Exposure", *(f"{s.exposure:.0%}" for s in runs)],
        [f"DSR ({result.n_trials} trials) / PSR (vs 0)", _num(result.dsr), *psr] if psr else
        [f"DSR ({result.n_trials} trials)", _num(result.dsr), *blank],
    ]


def verdict_rows(result: WalkForwardResult) -> list[list[str]]:
    """(baseline, Sharpe difference, interval, verdict) per baseline: did the strategy beat it."""
    return [[c.label, f"{c.difference:+.2f}", f"[{c.low:+.2f}, {c.high:+.2f}]", c.verdict]
            for c in result.comparisons]


def yearly_rows(result: WalkForwardResult) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the yearly returns table (strategy, then each baseline)."""
    names = ["strategy", *result.baselines]
    headers = ["Year", "Bars", "Strategy", *(b.label for b in result.baselines.values())]
    return headers, [[str(row["year"]), str(row["bars"]), *(_pct(row[n]) for n in names)] for row in result.yearly]


REPORT_FILES = ("report.html", "equity.png")
"""The files :func:`write_report` writes."""


def write_report(result: WalkForwardResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``equity.png`` into ``out_dir`` (created if needed).

    Args:
        result: A walk-forward result.
        out_dir: Folder of the report.

    Returns:
        The paths of the HTML report and of the equity-curve PNG.
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dates = np.asarray(result.dates, dtype="datetime64[D]")

    equity_fig = Figure(figsize=(11, 4.5), layout="constrained")
    _equity(equity_fig.add_subplot(), result, dates)
    png_path = out / REPORT_FILES[1]
    equity_fig.savefig(png_path, dpi=110)

    fig = Figure(figsize=(11, 9), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True, height_ratios=[1.0, 1.2, 1.0])
    _drawdown(axes[0], result, dates)
    _positions(axes[1], result, dates)
    _agents(axes[2], result, dates)
    images = [_png(equity_fig), _png(fig)]

    html_path = out / REPORT_FILES[0]
    html_path.write_text(_html(result, images), encoding="utf-8")
    return html_path, png_path


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _runs(labels: list[str]) -> list[tuple[int, int, str]]:
    """(first, last, label) of each run of equal labels."""
    runs: list[tuple[int, int, str]] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((start, i - 1, labels[start]))
            start = i
    return runs


def _equity(ax: Axes, result: WalkForwardResult, dates: np.ndarray[Any, Any]) -> None:
    symbol = result.symbols[0]
    labels = result.regimes[symbol]
    ends = np.append(dates[1:], dates[-1] + np.timedelta64(1, "D"))
    for first, last, label in _runs(labels):
        ax.axvspan(dates[first], ends[last], color=REGIME_COLOURS.get(label, "#cccccc"), alpha=0.15, lw=0)
    ax.plot(dates, result.equity, color="#1f3b73", lw=1.4, label="strategy")
    for (name, run), colour in zip(result.baselines.items(), _BASELINE_COLOURS, strict=False):
        ax.plot(dates, run.equity, color=colour, lw=1.0, label=run.label, ls="-" if name == "buy_and_hold" else "--")
    ax.set_ylabel("equity (start = 1)")
    whose = f" ({symbol}'s regimes)" if len(result.symbols) > 1 else ""
    ax.set_title(f"Equity, {result.dates[0]} to {result.dates[-1]}; shading: filtered regime{whose}")
    from matplotlib.patches import Patch

    handles, _ = ax.get_legend_handles_labels()
    handles += [Patch(color=c, alpha=0.3, label=label) for label, c in REGIME_COLOURS.items() if label in labels]
    ax.legend(handles=handles, loc="upper left", fontsize=8, ncols=2)
    ax.grid(alpha=0.3)


def _drawdown(ax: Axes, result: WalkForwardResult, dates: np.ndarray[Any, Any]) -> None:
    for series, name, colour, alpha in ((result.benchmark_equity, "buy & hold", "#999999", 0.45),
                                        (result.equity, "strategy", "#1f3b73", 0.6)):
        peak = np.maximum(np.maximum.accumulate(series), 1.0)
        ax.fill_between(dates, series / peak - 1.0, 0.0, color=colour, alpha=alpha, label=name, lw=0)
    limit = result.config.get("limits", {}).get("drawdown_stop")
    if limit is not None:
        ax.axhline(-float(limit), color="#d62728", lw=0.8, ls="--", label=f"drawdown stop {float(limit):.0%}")
    if result.stop_dates:
        ax.vlines(np.asarray(result.stop_dates, dtype="datetime64[D]"), 0.0, 1.0, transform=ax.get_xaxis_transform(),
                  color="#d62728", lw=0.8, label="stop fired")
    ax.set_ylabel("drawdown")
    ax.set_title("Drawdown from the running peak")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)


def _positions(ax: Axes, result: WalkForwardResult, dates: np.ndarray[Any, Any]) -> None:
    for i, symbol in enumerate(result.symbols):
        ax.step(dates, result.positions[:, i], where="post", lw=0.8, label=symbol)
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_ylabel("target position")
    ax.set_title("Target positions (fraction of equity, decided at each close)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)


def _agents(ax: Axes, result: WalkForwardResult, dates: np.ndarray[Any, Any]) -> None:
    names = list(_AGENT_COLOURS)
    ends = np.append(dates[1:], dates[-1] + np.timedelta64(1, "D"))
    for k, symbol in enumerate(result.symbols):
        offset = 0.3 * k / max(len(result.symbols), 1)
        for first, last, agent in _runs(result.agents[symbol]):
            if agent in _AGENT_COLOURS:
                ax.hlines(names.index(agent) + offset, dates[first], ends[last], color=_AGENT_COLOURS[agent], lw=6)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.5, len(names) - 0.25)
    ax.set_title("Agent followed (the meta-orchestrator's choice" + (", one row offset per symbol)"
                                                                   if len(result.symbols) > 1 else ")"))
    ax.grid(alpha=0.3, axis="x")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html(result: WalkForwardResult, images: list[str]) -> str:
    c = result.config
    stats = _table(stats_headers(result), stats_rows(result))
    verdicts = _table(["Against", "Sharpe difference", f"{_LEVEL:.0%} interval", "Verdict"], verdict_rows(result))
    sentences = "".join(f"<li>{html.escape(x.sentence)}</li>" for x in result.comparisons)
    year_headers, year_rows = yearly_rows(result)
    yearly = _table(year_headers, year_rows)
    rules = "".join(f"<li>{html.escape(b.label)}: {html.escape(b.rule)}</li>" for b in result.baselines.values())
    alts = _table(["Following only", "Sharpe", "Sortino", "Max DD", "Annual return", "Turnover", "Trades"],
                  [[a, _num(s.sharpe), _num(s.sortino), _pct(-s.max_drawdown), _pct(s.annual_return),
                    _num(s.turnover), str(s.n_trades)] for a, s in result.alternatives.items()])
    fits = _table(["Symbol", "Fitted on bars up to", "Bars", "Labels", "Job", "States", "Converged", "Method"],
                  [[f.symbol, f.fit_date, str(f.n_train), f"{f.block_start}..{f.block_end}", f.job_id,
                    str(f.n_states), "yes" if f.converged else "no",
                    f.method_used + (" (fallback)" if f.fallback else "")] for f in result.regime_fits])
    limits = c.get("limits", {})
    fill = FILL_TEXT.get(str(c.get("fill")), str(c.get("fill")))
    setup = (
        f"{', '.join(result.symbols)}, {result.dates[0]} to {result.dates[-1]} ({len(result.dates)} bars, "
        f"{result.periods_per_year} a year; {c.get('train_bars_before_start')} bars of history before). Costs "
        f"{c.get('cost_bps')} bp per unit of turnover; fills: {fill}; partial adjustment "
        f"{c.get('adjust_rate', 1.0)} of the gap per decision, no-trade band {c.get('trade_band')}. "
        f"Regimes: the server's causal labelling job, a Gaussian HMM refitted every {c.get('refit_every')} "
        f"bars on an expanding window, filtered labels read with the trend ({len(result.regime_fits)} fits). "
        f"Agents: {result.agents_used}. "
        f"Meta-orchestrator: {c.get('policy')} bandit '{result.bandit_name}' "
        f"({result.bandit_id}), choosing every {c.get('select_every')} bars. Risk limits: max position "
        f"{limits.get('max_position')}, max gross {limits.get('max_gross')}, max 1-day VaR95 "
        f"{limits.get('max_var')}, drawdown stop {limits.get('drawdown_stop')} (re-entry after "
        f"{c.get('cooldown')} bars). Drawdown stops fired: {', '.join(result.stop_dates) or 'none'}."
    )
    t = result.trials
    trials = (f"The DSR deflates the strategy's Sharpe by {t.n_trials} distinct trials recorded on this span "
              f"({t.new} new in this run; variance of their per-bar Sharpe ratios {t.sharpe_variance:.2e})"
              if t.ledger else f"The DSR deflates by this run's {t.n_trials} trials only (no trials ledger)")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    title = html.escape(f"Walk-forward backtest: {', '.join(result.symbols)}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Walk-forward backtest of the crew's decision pipeline</h1>
<p>{html.escape(setup)}</p>
<h2>Did the strategy beat the baselines?</h2>
<ul>{sentences}</ul>
{verdicts}
<h2>Strategy vs the baselines (same fills and costs)</h2>
{stats}
<ul>{rules}</ul>
<p>{html.escape(trials)}. This run's trial Sharpe ratios:
{html.escape(', '.join(f'{k} {_num(v)}' for k, v in result.trial_sharpes.items()))}.</p>
<h2>Returns by year</h2>
{yearly}
<h2>Equity</h2>
<img alt="equity curve with regimes shaded" src="data:image/png;base64,{images[0]}">
<h2>Drawdown, positions, agent followed</h2>
<img alt="drawdown, positions and agent followed" src="data:image/png;base64,{images[1]}">
<h2>The same pipeline following one agent all the time</h2>
{alts}
<h2>Regime fits</h2>
{fits}
<ul>{notes}</ul>
<p>Walk-forward wall time {result.wall_s:.1f} s.</p>
</body></html>
"""
