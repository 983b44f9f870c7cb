"""The crew against each baseline, in numbers and in one plain sentence; and the yearly returns table.

"Beat" means a higher Sharpe ratio after costs on the same bars, fills and costs. The 90%
paired circular block-bootstrap interval of the Sharpe difference
(:func:`quantcrew.quant.bootstrap.block_bootstrap_sharpe_diff`, blocks of the calendar
equivalent of 20 trading days) says whether that could be luck:

* ``beat``: the whole interval is above 0;
* ``worse``: the whole interval is below 0;
* ``higher, not significant`` / ``lower, not significant``: the interval straddles 0.

Maximum drawdowns are compared beside it (lower is better) but do not decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from quantcrew.backtest.baselines import calendar_bars
from quantcrew.backtest.stats import Stats
from quantcrew.quant.bootstrap import block_bootstrap_sharpe_diff
from quantcrew.quant.performance import period_returns

__all__ = ["LEVEL", "Comparison", "compare", "yearly_returns"]

LEVEL = 0.90
_BLOCK_DAYS = 20


@dataclass(frozen=True)
class Comparison:
    """The crew against one baseline.

    Attributes:
        baseline: The baseline's key; label its name in reports.
        sharpe, baseline_sharpe: Annualised Sharpe ratios after costs.
        difference: ``sharpe - baseline_sharpe``.
        low, high: The bootstrap interval of the difference at :data:`LEVEL`.
        max_drawdown, baseline_max_drawdown: Largest peak-to-trough losses, positive fractions.
        verdict: ``beat``, ``worse``, ``higher, not significant`` or ``lower, not significant``.
        sentence: The comparison in one plain sentence.
    """

    baseline: str
    label: str
    sharpe: float
    baseline_sharpe: float
    difference: float
    low: float
    high: float
    max_drawdown: float
    baseline_max_drawdown: float
    verdict: str
    sentence: str

    @property
    def beat(self) -> bool:
        """True when the crew's Sharpe is significantly higher (the interval above 0)."""
        return self.verdict == "beat"

    def as_dict(self) -> dict[str, Any]:
        """JSON-able fields, ``beat`` included."""
        return {**asdict(self), "beat": self.beat, "level": LEVEL}


def compare(equity: npt.ArrayLike, stats: Stats, baseline_equity: npt.ArrayLike, baseline_stats: Stats, *,
            baseline: str, label: str, periods_per_year: int, seed: int = 0, who: str = "the crew") -> Comparison:
    """Compare two equity curves on the same bars (both starting from 1.0).

    Args:
        equity: The crew's equity at each close.
        stats: Its statistics (for the Sharpe and drawdown reported).
        baseline_equity: The baseline's equity on the same bars.
        baseline_stats: Its statistics.
        baseline: The baseline's key.
        label: The baseline's name in the sentence.
        periods_per_year: Bars per year of the data's calendar.
        seed: Seed of the bootstrap.
        who: Who is compared, for the sentence.
    """
    a = period_returns(np.asarray(equity, dtype=np.float64), 1.0)
    b = period_returns(np.asarray(baseline_equity, dtype=np.float64), 1.0)
    if a.shape[0] >= 2:
        _, low, high = block_bootstrap_sharpe_diff(a, b, block=calendar_bars(_BLOCK_DAYS, periods_per_year),
                                                   level=LEVEL, seed=seed, periods_per_year=periods_per_year)
    else:
        low = high = float("nan")
    difference = stats.sharpe - baseline_stats.sharpe
    if low > 0:
        verdict = "beat"
    elif high < 0:
        verdict = "worse"
    else:
        verdict = f"{'higher' if difference > 0 else 'lower'}, not significant"
    plain = {"beat": f"{who.capitalize()} beat {label}",
             "worse": f"{who.capitalize()} did worse than {label}, significantly"}.get(
        verdict, f"{who.capitalize()} did not beat {label}" + (" significantly" if difference > 0 else ""))
    sentence = (f"{plain}: Sharpe {stats.sharpe:.2f} vs {baseline_stats.sharpe:.2f}, difference {difference:+.2f} "
                f"({LEVEL:.0%} interval {low:+.2f} to {high:+.2f}); max drawdown {stats.max_drawdown:.1%} vs "
                f"{baseline_stats.max_drawdown:.1%}.")
    return Comparison(baseline=baseline, label=label, sharpe=stats.sharpe, baseline_sharpe=baseline_stats.sharpe,
                      difference=difference, low=low, high=high, max_drawdown=stats.max_drawdown,
                      baseline_max_drawdown=baseline_stats.max_drawdown, verdict=verdict, sentence=sentence)


def yearly_returns(dates: Sequence[str], equities: Mapping[str, npt.ArrayLike]) -> list[dict[str, Any]]:
    """Each calendar year's return of every equity curve (equity 1.0 before the first bar).

    A year's return runs from the last close of the year before (1.0 for the first year) to the
    year's last close; a partial first or last year is the part the span holds (``bars`` says).

    Returns:
        One row per year: ``{"year": 2008, "bars": 253, "<name>": return, ...}``.
    """
    years = np.array([d[:4] for d in dates])
    rows: list[dict[str, Any]] = []
    if years.size == 0:
        return rows
    cuts = np.flatnonzero(years[1:] != years[:-1]) + 1
    bounds = list(zip([0, *cuts.tolist()], [*cuts.tolist(), years.size], strict=True))
    curves = {name: np.asarray(e, dtype=np.float64) for name, e in equities.items()}
    for first, end in bounds:
        row: dict[str, Any] = {"year": int(years[first]), "bars": end - first}
        for name, e in curves.items():
            before = e[first - 1] if first > 0 else 1.0
            row[name] = float(e[end - 1] / before - 1.0) if before > 0 else float("nan")
        rows.append(row)
    return rows
