"""Smart-money-concept (SMC) patterns, causal: each is marked at the bar that confirms it.

Every array returned here has one entry per bar, and entry ``t`` depends on bars ``<= t``
only: the pattern is marked at the first bar at which it is *known*, never at the earlier
bar it refers to (a swing high is marked ``length`` bars after its peak, when the bars
that make it a peak have printed). Row ``t`` is therefore identical whether the series
stops at ``t`` or runs on. Everything is numpy: swings by shifted elementwise comparisons,
"last event so far" by ``np.maximum.accumulate`` over indices, "first time since a level
was set" by cumulative counts; there is no loop over bars.

Definitions (``L = length``; ``H_t`` / ``S_t`` are the levels of :func:`swing_levels`):

* swing high confirmed at ``t``: bar ``s = t - L`` has ``high[s] > high[j]`` for every
  ``j`` in ``[s - L, s + L]``, ``j != s`` (strict, so a flat top is no swing); needs
  ``t >= 2L``. Swing low: the mirror with ``low`` and ``<``.
* fair value gap at ``t``: ``+1`` when ``low[t] > high[t-2]`` (bullish), ``-1`` when
  ``high[t] < low[t-2]`` (bearish); the gap is the price range bar ``t-1`` crossed that
  bars ``t-2`` and ``t`` never traded.
* break of structure at ``t``: ``+1`` when ``close[t] > H_t`` and no close since the bar
  that confirmed ``H_t`` was above it (the first close above the last confirmed swing
  high); ``-1`` mirror with ``close[t] < S_t``; 0 when both hold.
* liquidity sweep at ``t``: ``-1`` when bar ``t`` is the first bar since ``H_t`` was
  confirmed whose high trades above ``H_t`` and it closes back below ``H_t`` (buy-side
  liquidity taken); ``+1`` mirror with the first low below ``S_t`` and a close back above.
* order block: see :func:`order_blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MarketStructure",
    "break_of_structure",
    "fair_value_gaps",
    "liquidity_sweeps",
    "market_structure",
    "order_blocks",
    "swing_levels",
    "swing_points",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
Int8Array = npt.NDArray[np.int8]
IntArray = npt.NDArray[np.int64]


def swing_points(high: npt.ArrayLike, low: npt.ArrayLike, length: int = 5) -> tuple[BoolArray, BoolArray]:
    """Swing highs and lows, each marked at its confirmation bar.

    ``swing_high[t]`` is True when bar ``s = t - length`` is a swing high: its high is
    strictly above the high of every other bar in ``[s - length, s + length]``, the last of
    which is ``t``. ``swing_low[t]`` is the mirror on lows. Nothing is marked before
    ``t = 2 * length``. One bar can be both (an outside bar).

    Args:
        high: Highs, shape ``(n,)``.
        low: Lows, shape ``(n,)``.
        length: Bars on each side of the swing bar; at least 1.

    Returns:
        ``(swing_high_confirmed, swing_low_confirmed)``, bool arrays of shape ``(n,)``.

    Raises:
        ValueError: Arrays of different lengths or not 1-D (the message names the column),
            ``length < 1``.
    """
    _check_length(length)
    h, lo = _columns(high=high, low=low)
    return _swings(h, lo, length)


def swing_levels(high: npt.ArrayLike, low: npt.ArrayLike, length: int = 5) -> tuple[FloatArray, FloatArray]:
    """Level of the last confirmed swing high and swing low as known at each bar.

    ``swing_high_level[t] = high[c - length]`` where ``c <= t`` is the last bar at which
    :func:`swing_points` confirmed a swing high; NaN before the first. Same for lows.

    Args:
        high: Highs, shape ``(n,)``.
        low: Lows, shape ``(n,)``.
        length: Swing half-width (see :func:`swing_points`).

    Returns:
        ``(swing_high_level, swing_low_level)``, float64 arrays of shape ``(n,)``.

    Raises:
        ValueError: As :func:`swing_points`.
    """
    _check_length(length)
    h, lo = _columns(high=high, low=low)
    sh, sl = _swings(h, lo, length)
    return _level(h, sh, length)[0], _level(lo, sl, length)[0]


def fair_value_gaps(high: npt.ArrayLike, low: npt.ArrayLike) -> Int8Array:
    """Three-bar fair value gaps, marked at the third bar.

    ``+1`` at ``t`` when ``low[t] > high[t-2]`` (bullish gap ``(high[t-2], low[t])``),
    ``-1`` when ``high[t] < low[t-2]`` (bearish gap ``(high[t], low[t-2])``), else 0; bars
    0 and 1 are 0. With ``high >= low`` the two cannot hold at once.

    Args:
        high: Highs, shape ``(n,)``.
        low: Lows, shape ``(n,)``.

    Returns:
        int8 array of shape ``(n,)``.

    Raises:
        ValueError: Arrays of different lengths or not 1-D (the message names the column).
    """
    h, lo = _columns(high=high, low=low)
    out = np.zeros(h.shape[0], dtype=np.int8)
    if h.shape[0] >= 3:
        out[2:] = (lo[2:] > h[:-2]).astype(np.int8) - (h[2:] < lo[:-2]).astype(np.int8)
    return out


def break_of_structure(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, length: int = 5) -> Int8Array:
    """Breaks of structure: the first close beyond the last confirmed swing level.

    ``+1`` at ``t`` when ``close[t] > H_t`` (the last confirmed swing high as known at
    ``t``) and no close in ``[c, t-1]`` was above it, ``c`` being the bar that confirmed
    ``H_t``; ``-1`` mirror below the last confirmed swing low; 0 when both or neither. A
    level breaks once; a newly confirmed swing starts a new level.

    Args:
        high: Highs, shape ``(n,)``.
        low: Lows, shape ``(n,)``.
        close: Closes, shape ``(n,)``.
        length: Swing half-width (see :func:`swing_points`).

    Returns:
        int8 array of shape ``(n,)``.

    Raises:
        ValueError: As :func:`swing_points`.
    """
    return market_structure(high, low, close, length).bos


def liquidity_sweeps(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, length: int = 5) -> Int8Array:
    """Liquidity sweeps: a wick through the last confirmed swing level that closes back inside.

    ``-1`` at ``t`` when bar ``t`` is the first bar since ``H_t`` was confirmed with
    ``high > H_t``, and ``close[t] < H_t`` (the stops resting above the swing high were
    taken and price fell back: bearish). ``+1`` mirror: the first ``low < S_t`` since
    ``S_t`` was confirmed, with ``close[t] > S_t``. 0 when both or neither. Each level can
    be swept once: the first bar that trades through it takes the liquidity, whether it
    then closes back (a sweep) or beyond (a break, see :func:`break_of_structure`).

    Args:
        high: Highs, shape ``(n,)``.
        low: Lows, shape ``(n,)``.
        close: Closes, shape ``(n,)``.
        length: Swing half-width (see :func:`swing_points`).

    Returns:
        int8 array of shape ``(n,)``.

    Raises:
        ValueError: As :func:`swing_points`.
    """
    return market_structure(high, low, close, length).sweep


def order_blocks(
    open_: npt.ArrayLike, high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, length: int = 5
) -> Int8Array:
    """Price revisiting the active order block: ``+1`` bullish zone, ``-1`` bearish zone.

    A bullish order block is created at a bullish break of structure at bar ``t``: the zone
    is ``[low[j], high[j]]`` of the last bearish candle (``close < open``) ``j`` in
    ``[t - 2*length, t - 1]`` (no such candle: no new zone, the previous one stays). The
    zone is active from bar ``t + 1`` until a bar closes below its low (mitigated: it is
    inactive from that bar on, that bar included) or the next bullish order block replaces
    it. The output is ``+1`` at every bar ``u`` where the bullish zone is active and the
    bar's range overlaps it (``low[u] <= zone high`` and ``high[u] >= zone low``). Bearish
    mirror: at a bearish break, the last bullish candle (``close > open``) gives the zone,
    killed by a close above its high, marked ``-1``. Both at once: 0.

    Args:
        open_: Opens, shape ``(n,)``.
        high: Highs, shape ``(n,)``.
        low: Lows, shape ``(n,)``.
        close: Closes, shape ``(n,)``.
        length: Swing half-width (see :func:`swing_points`); the candle search window is
            ``2 * length`` bars.

    Returns:
        int8 array of shape ``(n,)``.

    Raises:
        ValueError: As :func:`swing_points`.
    """
    _check_length(length)
    o, h, lo, c = _columns(open=open_, high=high, low=low, close=close)
    bos = market_structure(h, lo, c, length).bos
    bull = _zone_side(h, lo, c, bos == 1, c < o, length, bullish=True)
    bear = _zone_side(h, lo, c, bos == -1, c > o, length, bullish=False)
    return (bull.astype(np.int8) - bear.astype(np.int8)).astype(np.int8)


@dataclass(frozen=True, eq=False)
class MarketStructure:
    """Swing levels, breaks and sweeps of one series, computed together.

    Attributes:
        high_level: :func:`swing_levels`' last confirmed swing high at each bar (NaN before).
        low_level: The same for swing lows.
        bos: :func:`break_of_structure`'s int8 events.
        sweep: :func:`liquidity_sweeps`' int8 events.
    """

    high_level: FloatArray
    low_level: FloatArray
    bos: Int8Array
    sweep: Int8Array


def market_structure(high: npt.ArrayLike, low: npt.ArrayLike, close: npt.ArrayLike, length: int = 5) -> MarketStructure:
    """Swing levels, breaks of structure and liquidity sweeps in one pass over the swings.

    Args:
        high: Highs, shape ``(n,)``.
        low: Lows, shape ``(n,)``.
        close: Closes, shape ``(n,)``.
        length: Swing half-width (see :func:`swing_points`).

    Returns:
        The four per-bar arrays, as :func:`swing_levels`, :func:`break_of_structure` and
        :func:`liquidity_sweeps` define them.

    Raises:
        ValueError: As :func:`swing_points`.
    """
    _check_length(length)
    h, lo, c = _columns(high=high, low=low, close=close)
    sh, sl = _swings(h, lo, length)
    high_level, high_start = _level(h, sh, length)
    low_level, low_start = _level(lo, sl, length)
    with np.errstate(invalid="ignore"):  # NaN levels compare False, as wanted
        bos_up = _first_in_segment(c > high_level, high_start)
        bos_down = _first_in_segment(c < low_level, low_start)
        sweep_up = _first_in_segment(h > high_level, high_start) & (c < high_level)
        sweep_down = _first_in_segment(lo < low_level, low_start) & (c > low_level)
    return MarketStructure(
        high_level=high_level,
        low_level=low_level,
        bos=(bos_up.astype(np.int8) - bos_down.astype(np.int8)).astype(np.int8),
        sweep=(sweep_down.astype(np.int8) - sweep_up.astype(np.int8)).astype(np.int8),
    )


# --- internals ---------------------------------------------------------------------------------


def _swings(h: FloatArray, lo: FloatArray, length: int) -> tuple[BoolArray, BoolArray]:
    n = h.shape[0]
    sh = np.zeros(n, dtype=bool)
    sl = np.zeros(n, dtype=bool)
    if n < 2 * length + 1:
        return sh, sl
    # bar s = t - length against its neighbours s - k and s + k, for every t >= 2 * length;
    # shifted elementwise comparisons, much faster than a max over a strided window view
    mid = slice(length, n - length)
    top = np.ones(n - 2 * length, dtype=bool)
    bottom = np.ones(n - 2 * length, dtype=bool)
    for k in range(1, length + 1):
        for side in (slice(length - k, n - length - k), slice(length + k, n - length + k)):
            top &= h[mid] > h[side]
            bottom &= lo[mid] < lo[side]
    sh[2 * length :] = top
    sl[2 * length :] = bottom
    return sh, sl


def _last_index(mask: BoolArray) -> IntArray:
    """Index of the last True at or before each bar, -1 before the first."""
    idx = np.where(mask, np.arange(mask.shape[0], dtype=np.int64), np.int64(-1))
    return np.maximum.accumulate(idx) if idx.size else idx


def _level(x: FloatArray, confirmed: BoolArray, length: int) -> tuple[FloatArray, IntArray]:
    """Forward-filled ``x[c - length]`` of the last confirmation ``c``, and ``c`` itself."""
    start = _last_index(confirmed)
    level = np.full(x.shape[0], np.nan)
    ok = start >= 0
    level[ok] = x[start[ok] - length]
    return level, start


def _segment_count(flag: BoolArray, start: IntArray) -> IntArray:
    """Number of True ``flag`` in ``[start[t], t]`` (0 where ``start[t] < 0``)."""
    if flag.size == 0:
        return np.zeros(0, dtype=np.int64)
    cs = np.cumsum(flag, dtype=np.int64)
    s = np.maximum(start, 0)
    before = cs[s] - flag[s]
    return np.where(start >= 0, cs - before, 0)


def _first_in_segment(flag: BoolArray, start: IntArray) -> BoolArray:
    """True where ``flag`` holds for the first time since the segment began at ``start``."""
    first: BoolArray = flag & (_segment_count(flag, start) == 1)
    return first


def _zone_side(
    h: FloatArray, lo: FloatArray, c: FloatArray, breaks: BoolArray, candle: BoolArray, length: int, *, bullish: bool
) -> BoolArray:
    """Bars where price overlaps the active zone of one side (see :func:`order_blocks`)."""
    n = h.shape[0]
    last_candle = np.full(n, -1, dtype=np.int64)
    last_candle[1:] = _last_index(candle)[:-1]  # last opposite candle at or before t-1
    t = np.flatnonzero(breaks & (last_candle >= 0))
    j = last_candle[t]
    keep = (j >= t - 2 * length) & (t + 1 < n)  # a zone made at the last bar has no bar to act on
    t, j = t[keep], j[keep]
    starts = np.zeros(n, dtype=bool)
    starts[t + 1] = True
    seg = _last_index(starts)
    zone_top = np.full(n, np.nan)
    zone_bottom = np.full(n, np.nan)
    zone_top[t + 1] = h[j]
    zone_bottom[t + 1] = lo[j]
    active = seg >= 0
    s = np.maximum(seg, 0)
    top, bottom = zone_top[s], zone_bottom[s]
    with np.errstate(invalid="ignore"):
        killed = active & ((c < bottom) if bullish else (c > top))
        overlap = active & (lo <= top) & (h >= bottom)
    alive: BoolArray = overlap & (_segment_count(killed, seg) == 0)
    return alive


def _check_length(length: int) -> None:
    if isinstance(length, bool) or not isinstance(length, int | np.integer) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")


def _columns(**arrays: npt.ArrayLike) -> tuple[FloatArray, ...]:
    """The arrays as 1-D float64 of one length; a ValueError names the column that differs."""
    out: list[FloatArray] = []
    n: int | None = None
    first = ""
    for name, arr in arrays.items():
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim != 1:
            raise ValueError(f"column {name!r} must be 1-D, got shape {a.shape}")
        if n is None:
            n, first = a.shape[0], name
        elif a.shape[0] != n:
            raise ValueError(f"column {name!r} has {a.shape[0]} values but {first!r} has {n}")
        out.append(a)
    return tuple(out)
