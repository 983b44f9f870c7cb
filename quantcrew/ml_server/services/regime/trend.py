"""The trend reading of a bar's regime: a calm label reads ``bear`` when the calm days are falling.

The HMM sees volatility (the intraday range), and its states are named from their return
statistics (:mod:`quantcrew.ml_server.services.regime.labels`). That finds turbulence on the day
it starts, but not a slow bear market: a decline at ordinary volatility lands in a calm state,
and the calm state is named from the drift of ALL its bars, most of them from rising markets.
NASDAQ from January to October 2002 fell another 44 % at volatility its fit window had seen
for years, and 69 % of those bars were labelled ``bull``. Drift cannot be learned per state
either: a state mean is known only to about ``s / sqrt(n)`` (see ``labels``), and adding the
return as an HMM feature splits days by their sign (see ``service``).

So the label of each bar also weighs what the days the filter calls calm have done lately.
The **calm-day index** adds up the log returns of bars ``1..t``, each weighted by its filtered
probability of being calm (``bull`` + ``sideways``): the path the market took on its calm days,
with the days the filter already calls ``bear`` or ``volatile`` left out. Read in calendar time,
so that daily, weekly and hourly bars mean the same thing:

* **calm drawdown**: how far the index sits below its highest value of the last 365 days;
* **calm trailing return**: the index's change over the last 91 days (a quarter), from the last
  bar at least that far back; undefined while the bars sent do not reach that far.

A bar is in a **bear trend** when its calm drawdown is at least 20 % AND its calm trailing
return is negative: the market has lost a fifth of its value on the days called calm, and is
still losing on them. Then the probability of the calm labels (``bull`` and ``sideways``) moves
to ``bear``; ``volatile`` keeps its own, so a shock is still called volatile on the day.
Outside a bear trend the filtered probabilities stand as they are.

Why this reading, and these numbers:

* 20 % below the high is the usual definition of a bear market (press and index providers),
  and a year is the horizon it is measured on; a quarter is the shortest horizon over which a
  bear market's drift (-0.1 % to -0.3 % a day) is usually larger than the period's noise. These
  are conventions, not fits to any series here.
* The drawdown and the quarter's return alone (without the calm days: the first version of
  this rule) would keep a quarter of calm bars ``bear`` after every crash: the crash is in the
  drawdown and in the quarter's return while the market has already turned calm (sideways, or
  rising). The synthetic markets of ``bench/regime_accuracy.py`` are full of such spells, and
  there that version cut the detector's accuracy from 1.12x to 1.03x the oracle's (median of 15
  markets; min 1.08x to 0.92x). Counting the calm days only asks the question the filter cannot
  answer itself (are the days it calls calm falling?) and leaves the crash to the filter, which
  already calls it ``bear`` or ``volatile``: on the same 15 markets it changes no label.
* The trailing return is a sign, not a t-statistic: at a quarter's horizon a true bear drift
  has ``|t|`` below 1 (-0.15 % a day at 1.6 % volatility: -0.74), so a significance test would
  miss nearly every slow bear.
* Drawdown alone would keep the label ``bear`` long after a bottom (NASDAQ stayed more than
  20 % below its 2000 high until 2015); requiring the last quarter to be down too hands a
  recovery back to the filter within a quarter.
* The reading is deterministic (a rule on prices and filtered probabilities, not a fitted
  probability): a bar it turns bear gets ``P(bear) = 1 - P(volatile)``.

Limitation: where a bear market's losses fall on the days the filter calls ``bear`` or
``volatile`` and its calm days are flat, the reading does not fire (those days are bear
already; the calm days between them stay calm).

Causal: bar ``t`` uses the closes, times and filtered probabilities of bars ``<= t`` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.schemas.regime import RegimeLabel

__all__ = [
    "BEAR_DRAWDOWN",
    "DRIFT_DAYS",
    "HIGH_DAYS",
    "TrendReading",
    "apply_trend",
    "trend_reading",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

HIGH_DAYS = 365
"""Calendar days over which the high of the drawdown is taken."""
DRIFT_DAYS = 91
"""Calendar days of the trailing return (a quarter)."""
BEAR_DRAWDOWN = 0.20
"""Drawdown from the year's high at which a falling market reads as a bear market."""

_CALM: tuple[RegimeLabel, ...] = ("bull", "sideways")
_DAY = np.timedelta64(1, "D")


@dataclass(frozen=True)
class TrendReading:
    """The trend of every labelled bar (bars ``1..T-1``, like the filter's rows).

    Attributes:
        drawdown: ``1 - index / high`` of the calm-day index over the last ``HIGH_DAYS`` days,
            in ``[0, 1)``.
        trailing_return: Log change of the calm-day index over the last ``DRIFT_DAYS`` days;
            NaN where the bars do not reach that far back.
        bear: Whether the bar is in a bear trend (calm-day drawdown at least ``BEAR_DRAWDOWN``
            and a negative trailing change).
        price_drawdown: ``1 - close / high`` of the price itself over the last ``HIGH_DAYS``
            days (context for a reader; the rule does not use it).
    """

    drawdown: FloatArray
    trailing_return: FloatArray
    bear: BoolArray
    price_drawdown: FloatArray


def trend_reading(times: npt.NDArray[np.datetime64], close: FloatArray,
                  calm_weight: FloatArray | None = None) -> TrendReading:
    """The trend of bars ``1..T-1`` (causal: bar ``t`` sees bars ``<= t``).

    Args:
        times: Bar times, increasing, shape ``(T,)``.
        close: Closes, positive, shape ``(T,)``.
        calm_weight: Per bar ``1..T-1``, the filtered probability that it is calm (``bull`` or
            ``sideways``), shape ``(T - 1,)``; None counts every bar as calm (the price itself).
    """
    n = close.shape[0]
    if n < 2:
        empty = np.zeros(0)
        return TrendReading(empty, empty, np.zeros(0, dtype=np.bool_), empty)
    log_close = np.log(close)
    weight = np.ones(n - 1) if calm_weight is None else np.clip(np.asarray(calm_weight, dtype=np.float64), 0.0, 1.0)
    calm = np.concatenate([[0.0], np.cumsum(np.diff(log_close) * weight)])  # log of the calm-day index
    index = np.arange(n)
    first = np.minimum(np.searchsorted(times, times - HIGH_DAYS * _DAY, side="right"), index)  # inside the year
    drawdown = 1.0 - np.exp(calm - _range_max(calm, first, index))
    price_drawdown = 1.0 - np.exp(log_close - _range_max(log_close, first, index))
    before = np.searchsorted(times, times - DRIFT_DAYS * _DAY, side="right") - 1  # last bar a quarter back
    reach = before >= 0
    trailing = np.full(n, np.nan)
    trailing[reach] = calm[reach] - calm[before[reach]]
    bear = (drawdown >= BEAR_DRAWDOWN) & reach & (np.nan_to_num(trailing, nan=0.0) < 0.0)
    return TrendReading(drawdown[1:], trailing[1:], bear[1:], price_drawdown[1:])


def apply_trend(label_probs: dict[RegimeLabel, FloatArray], bear: BoolArray) -> dict[RegimeLabel, FloatArray]:
    """Label probabilities with the calm labels' mass moved to ``bear`` on the bars of a bear trend.

    Args:
        label_probs: Filtered probability of each label per bar.
        bear: The bars in a bear trend (:attr:`TrendReading.bear`).

    Returns:
        New arrays; the input is not changed. Each bar's probabilities still sum as before.
    """
    out = {label: np.array(p, dtype=np.float64, copy=True) for label, p in label_probs.items()}
    if not bool(np.any(bear)):
        return out
    moved = sum((out[label][bear] for label in _CALM if label in out), start=np.zeros(int(bear.sum())))
    for label in _CALM:
        if label in out:
            out[label][bear] = 0.0
    out["bear"] = out.get("bear", np.zeros(bear.shape[0]))
    out["bear"][bear] += moved
    return out


def _range_max(x: FloatArray, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64]) -> FloatArray:
    """``max(x[lo[i] : hi[i] + 1])`` for every ``i`` (a sparse table: ``O(n log n)``, no Python loop)."""
    levels = [x]
    width = 1
    while 2 * width <= x.shape[0]:
        prev = levels[-1]
        levels.append(np.maximum(prev[:-width], prev[width:]))
        width *= 2
    length = hi - lo + 1
    k = np.floor(np.log2(length)).astype(np.int64)
    out = np.empty(x.shape[0])
    for level in np.unique(k):
        rows = k == level
        table = levels[int(level)]
        out[rows] = np.maximum(table[lo[rows]], table[hi[rows] - (1 << int(level)) + 1])
    return out
