"""The rule sizing the execution network is judged against, and the returns both are scored on (numpy only).

:func:`rule_sizes` is the agent side's volatility-target rule (the execution tool's fallback,
``quantcrew.tools.fallbacks.execution_fallback``) evaluated at many bars at once. The two
MUST stay the same formula: the gate asks whether the network sizes better than the rule that
stands in for it when it fails, so the rule judged here has to be the rule that answers there.
A test checks them against each other bar by bar.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["RULE", "TARGET_DAILY_VOL", "VOL_WINDOWS", "next_bar_returns", "rule_sizes"]

FloatArray = npt.NDArray[np.float64]

TARGET_DAILY_VOL = 0.01
VOL_WINDOWS: tuple[int, ...] = (10, 20, 60)
RULE = "volatility-target rule: edge x 1% daily vol target / realised vol (10/20/60 bars)"
"""The rule's name as the gate verdict and the tools give it."""


def rule_sizes(close: npt.ArrayLike, rows: npt.ArrayLike, direction: npt.ArrayLike,
               confidence: npt.ArrayLike) -> FloatArray:
    """The rule's order size at each bar of ``rows``, reading closes up to that bar only.

    ``edge = clip((confidence - 1/3) * 1.5, 0, 1)`` (0 for a flat signal); for each window
    ``w`` in 10, 20, 60 bars, ``clip(edge * 1% / max(std(last w log returns, ddof 1), 1e-8), 0, 1)``;
    the size is the mean of the three.

    Args:
        close: Closes, shape ``(n,)``, positive.
        rows: Bars to size at, each with at least 60 log returns before it (``row >= 60``).
        direction: The signal's side per row: -1, 0 or +1.
        confidence: The probability of the signalled class per row, in ``[0, 1]``.

    Returns:
        Sizes in ``[0, 1]``, shape ``(len(rows),)``.

    Raises:
        ValueError: a row with fewer than 60 returns before it, or beyond the closes; lengths that differ.
    """
    c = np.asarray(close, dtype=np.float64)
    t = np.asarray(rows, dtype=np.int64)
    d = np.asarray(direction, dtype=np.float64)
    p = np.asarray(confidence, dtype=np.float64)
    if not (t.shape == d.shape == p.shape) or t.ndim != 1:
        raise ValueError(f"rows, direction and confidence must be 1-D of one length, got {t.shape}, {d.shape}, "
                         f"{p.shape}")
    longest = max(VOL_WINDOWS)
    if t.size and (t.min() < longest or t.max() >= c.size):
        raise ValueError(f"rows must lie in [{longest}, {c.size}): the rule reads the {longest} returns before a bar")
    edge = np.where(d != 0.0, np.clip((p - 1.0 / 3.0) * 1.5, 0.0, 1.0), 0.0)
    r = np.diff(np.log(c))
    sizes = np.zeros((len(VOL_WINDOWS), t.size))
    for i, w in enumerate(VOL_WINDOWS):
        # the returns r[t - w .. t - 1] end at bar t: the window starting at t - w
        vol = np.lib.stride_tricks.sliding_window_view(r, w).std(axis=1, ddof=1)[t - w]
        sizes[i] = np.clip(edge * TARGET_DAILY_VOL / np.maximum(vol, 1e-8), 0.0, 1.0)
    out: FloatArray = sizes.mean(axis=0)
    return out


def next_bar_returns(close: npt.ArrayLike, rows: npt.ArrayLike) -> FloatArray:
    """``close[t + 1] / close[t] - 1`` at each bar ``t`` of ``rows``: what a position taken at ``t``'s close earns.

    Raises:
        ValueError: a row without a next bar.
    """
    c = np.asarray(close, dtype=np.float64)
    t = np.asarray(rows, dtype=np.int64)
    if t.size and (t.min() < 0 or t.max() + 1 >= c.size):
        raise ValueError(f"rows must lie in [0, {c.size - 1}): each needs the next bar's close")
    out: FloatArray = c[t + 1] / c[t] - 1.0
    return out
