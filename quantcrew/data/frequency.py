"""A name for the spacing of a time series ("daily", "monthly"...), guessed from its timestamps.

Aligning series of different calendars keeps the coarsest one, so a panel's spacing is not
always its inputs'; the guess lets a caller notice a monthly series before annualising its
returns as daily ones. Numpy only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["NOMINAL_PERIODS", "guess_frequency", "periods_per_year"]

_DAY_NS = 86_400_000_000_000
_YEAR_DAYS = 365.25

NOMINAL_PERIODS: dict[str, int] = {"daily": 252, "weekly": 52, "monthly": 12, "quarterly": 4}
"""Bars per year of each spacing when the data is too short to count them (trading days for daily)."""


def guess_frequency(timestamps: npt.ArrayLike) -> str:
    """A name for the typical spacing of sorted timestamps, from the median step.

    Returns:
        ``"intraday"`` (under 0.9 day), ``"daily"`` (up to 4 days: weekends and holidays),
        ``"weekly"`` (up to 10), ``"monthly"`` (25 to 45), ``"quarterly"`` (80 to 100),
        ``"irregular"`` otherwise, or ``"unknown"`` with fewer than two timestamps.
    """
    ts = np.asarray(timestamps).astype("datetime64[ns]")
    if ts.size < 2:
        return "unknown"
    days = float(np.median(np.diff(ts.view(np.int64)))) / _DAY_NS
    for name, low, high in (("intraday", -np.inf, 0.9), ("daily", 0.9, 4.0), ("weekly", 4.0, 10.0),
                            ("monthly", 25.0, 45.0), ("quarterly", 80.0, 100.0)):
        if low <= days <= high:
            return name
    return "irregular"


def periods_per_year(timestamps: npt.ArrayLike) -> int:
    """Bars per year of a series, from its own calendar: what every annualised figure multiplies by.

    With at least a year of data the bars are COUNTED: ``(n - 1) / (span in years)``, rounded, so
    an equity index gives about 252, a crypto series traded every day 365, hourly equity bars about
    1,640 and hourly crypto bars 8,766, weekly 52 and monthly 12. A shorter series gets the
    nominal figure of its spacing (:data:`NOMINAL_PERIODS`; intraday: bars per trading day, from
    the median step, times 252).

    Raises:
        ValueError: fewer than two timestamps, or a spacing with no meaning per year ("irregular").
    """
    ts = np.sort(np.asarray(timestamps).astype("datetime64[ns]"))
    if ts.size < 2:
        raise ValueError(f"need at least two timestamps to infer bars per year, got {ts.size}")
    span_days = float(ts[-1].view(np.int64) - ts[0].view(np.int64)) / _DAY_NS
    if span_days >= _YEAR_DAYS:
        return max(1, round((ts.size - 1) / (span_days / _YEAR_DAYS)))
    name = guess_frequency(ts)
    if name in NOMINAL_PERIODS:
        return NOMINAL_PERIODS[name]
    if name == "intraday":
        step_days = float(np.median(np.diff(ts.view(np.int64)))) / _DAY_NS
        return max(1, round(min(1.0 / step_days, 24.0 * 60.0) * NOMINAL_PERIODS["daily"])) if step_days > 0 else 1
    raise ValueError(f"the bars are spaced {name}ly and span {span_days:.0f} days: too little to infer bars per year"
                     if name != "unknown" else "cannot infer bars per year")
