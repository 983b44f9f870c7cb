"""CSV export of a walk-forward run: equity, positions and trades, one file each.

* ``equity.csv``: per bar, the strategy's equity, gross return, cost and turnover, its drawdown,
  and each baseline's equity;
* ``positions.csv``: per bar and symbol, the target position decided at that close, the regime
  label and the agent followed;
* ``trades.csv``: the strategy's blotter, one row per fill and symbol: the bar it filled in,
  the price, the weight before (drifted) and after, the turnover and the cost (fractions of
  equity).

Plain ``csv`` from the standard library; numbers written with ``repr`` precision.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from quantcrew.backtest.walk_forward_result import WalkForwardResult

__all__ = ["CSV_FILES", "write_csv"]

CSV_FILES = ("equity.csv", "positions.csv", "trades.csv")


def write_csv(result: WalkForwardResult, out_dir: str | Path) -> list[Path]:
    """Write :data:`CSV_FILES` into ``out_dir`` (created if needed); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in CSV_FILES]
    baselines = list(result.baselines)
    peak = np.maximum(np.maximum.accumulate(result.equity), 1.0)
    with paths[0].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["date", "equity", "gross_return", "cost", "turnover", "drawdown",
                    *(f"{b}_equity" for b in baselines)])
        for j, date in enumerate(result.dates):
            w.writerow([date, float(result.equity[j]), float(result.gross_returns[j]), float(result.costs[j]),
                        float(result.turnover[j]), float(1.0 - result.equity[j] / peak[j]),
                        *(float(result.baselines[b].equity[j]) for b in baselines)])
    with paths[1].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["date", "symbol", "target", "regime", "agent"])
        for j, date in enumerate(result.dates):
            for i, symbol in enumerate(result.symbols):
                regimes, agents = result.regimes.get(symbol, []), result.agents.get(symbol, [])
                w.writerow([date, symbol, float(result.positions[j, i]), regimes[j] if j < len(regimes) else "",
                            agents[j] if j < len(agents) else ""])
    with paths[2].open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["date", "symbol", "price", "weight_before", "weight_after", "turnover", "cost"])
        for fill in result.fills:
            w.writerow([result.dates[fill.bar], result.symbols[fill.asset], fill.price, fill.before, fill.after,
                        abs(fill.after - fill.before), fill.cost])
    return paths
