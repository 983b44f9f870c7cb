"""A name for the spacing of a time series ("daily", "monthly"...), guessed from its timestamps.

Aligning series of different calendars keeps the coarsest one, so a panel's spacing is not
always its inputs'; the guess lets a caller notice a monthly series before annualising its
returns as daily ones. Numpy only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["guess_frequency"]

_DAY_NS = 86_400_000_000_000


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
