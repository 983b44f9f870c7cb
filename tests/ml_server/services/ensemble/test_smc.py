"""SMC patterns: hand-built paths marked at the confirmation bar, a per-bar loop oracle, no look-ahead."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from quantcrew.data import load_sample
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.services.ensemble.smc import (
    break_of_structure,
    fair_value_gaps,
    liquidity_sweeps,
    market_structure,
    order_blocks,
    swing_levels,
    swing_points,
)

FloatArray = npt.NDArray[np.float64]
Bars = tuple[FloatArray, FloatArray, FloatArray, FloatArray]  # open, high, low, close
MIRROR = 30.0  # price' = MIRROR - price turns every bullish pattern into its bearish twin


@pytest.fixture(scope="module")
def sp500() -> OHLCV:
    return load_sample("SP500").tail(1500)


@pytest.fixture(scope="module")
def synth() -> OHLCV:
    return generate_regime_market(1500, seed=7).bars


def _bars(close: list[float], *, bearish: dict[int, float] | None = None, wick: float = 0.5) -> Bars:
    """Doji bars (open == close) with ``high = close + wick``, ``low = close - wick``.

    ``bearish`` maps a bar to its open (above its close): that bar becomes a down candle
    and its high covers the open.
    """
    c = np.asarray(close, dtype=np.float64)
    o = c.copy()
    for i, value in (bearish or {}).items():
        o[i] = value
    return o, np.maximum(o, c) + wick, np.minimum(o, c) - wick, c


def _mirror(bars: Bars) -> Bars:
    o, h, lo, c = bars
    return MIRROR - o, MIRROR - lo, MIRROR - h, MIRROR - c


def _only(values: npt.ArrayLike, expected: dict[int, int]) -> None:
    """Assert ``values`` is 0 everywhere but at the given bars, where it has the given values."""
    arr = np.asarray(values).astype(np.int64)
    want = np.zeros(arr.shape[0], dtype=np.int64)
    for i, v in expected.items():
        want[i] = v
    assert arr.tolist() == want.tolist()


# A market-structure path (length 3): a peak at bar 3 (high 13.5), confirmed at bar 6; a
# trough at bar 6 (low 9.5), confirmed at bar 9; bar 10 wicks above 13.5 and closes at
# 13.2 (a sweep); bar 11 closes at 14 above it (the break); bar 7 is the last down candle
# before the break (open 11.8, close 11: zone [10.5, 12.3]); bars 14-15 revisit the zone,
# bar 16 closes at 10 below it (mitigated), bar 17 is back in the range but the zone is dead.
STRUCTURE_CLOSE = [10, 11, 12, 13, 12, 11, 10, 11, 12, 12.5, 13.2, 14, 14.5, 13, 12, 11, 10, 11, 12, 12.5]
STRUCTURE_LENGTH = 3


def test_swing_points_marked_length_bars_after_the_extreme() -> None:
    high = np.array([10, 11, 12, 15, 12, 11, 10, 11, 12, 13, 14, 15, 16, 17, 18], dtype=float)
    low = high - 1.0
    sh, sl = swing_points(high, low, length=3)
    assert sh.dtype == np.bool_ and sl.dtype == np.bool_
    assert np.flatnonzero(sh).tolist() == [6]  # the peak at bar 3 needs bars 4, 5, 6
    assert np.flatnonzero(sl).tolist() == [9]  # the trough at bar 6 needs bars 7, 8, 9
    sh5, _ = swing_points(high, low, length=5)  # bar 3 has only 3 bars on its left
    assert not sh5.any()


def test_swing_points_flat_top_is_no_swing() -> None:
    high = np.array([1, 2, 3, 5, 5, 3, 2, 1, 0.5, 0.4], dtype=float)
    sh, _ = swing_points(high, high - 0.1, length=2)
    assert not sh.any()
    high[4] = 4.9  # now bar 3 is strictly highest of bars 1..5, confirmed at bar 5
    sh, _ = swing_points(high, high - 0.1, length=2)
    assert np.flatnonzero(sh).tolist() == [5]


def test_swing_levels_forward_fill_from_the_confirmation_bar() -> None:
    high = np.array([10, 11, 12, 15, 12, 11, 10, 11, 12, 13, 14, 15, 16, 17, 18], dtype=float)
    hi_level, lo_level = swing_levels(high, high - 1.0, length=3)
    assert np.isnan(hi_level[:6]).all() and (hi_level[6:] == 15.0).all()
    assert np.isnan(lo_level[:9]).all() and (lo_level[9:] == 9.0).all()


def test_fair_value_gaps_marked_at_the_third_bar() -> None:
    close = [100.0] * 30
    close[11], close[12], close[13] = 101.0, 102.0, 102.0  # bar 12's low 101.5 > bar 10's high 100.5
    close[14:] = [102.0] * 16
    close[21], close[22:] = 101.0, [100.0] * 8  # bar 22's high 100.5 < bar 20's low 101.5
    o, h, lo, c = _bars(close)
    _only(fair_value_gaps(h, lo), {12: 1, 22: -1})
    # the same gap seen on the series cut at bar 11: not there yet
    assert not fair_value_gaps(h[:12], lo[:12]).any()


def test_fair_value_gaps_touching_ranges_are_no_gap() -> None:
    high = np.array([10.0, 11.0, 12.0])
    assert fair_value_gaps(high, np.array([9.0, 10.0, 10.0]))[2] == 0  # low[2] == high[0]
    assert fair_value_gaps(high, np.array([9.0, 10.0, 10.01]))[2] == 1


@pytest.mark.parametrize("mirrored", [False, True])
def test_break_of_structure_marked_at_the_first_close_beyond_the_level(mirrored: bool) -> None:
    bars = _bars(STRUCTURE_CLOSE)
    o, h, lo, c = _mirror(bars) if mirrored else bars
    sign = -1 if mirrored else 1
    bos = break_of_structure(h, lo, c, length=STRUCTURE_LENGTH)
    assert bos.dtype == np.int8
    _only(bos, {11: sign})  # bar 12 also closes beyond 13.5, but the level broke at bar 11
    assert not break_of_structure(h[:11], lo[:11], c[:11], length=STRUCTURE_LENGTH).any()


@pytest.mark.parametrize("mirrored", [False, True])
def test_liquidity_sweep_marked_when_a_wick_takes_the_level_and_closes_back(mirrored: bool) -> None:
    bars = _bars(STRUCTURE_CLOSE)
    o, h, lo, c = _mirror(bars) if mirrored else bars
    sign = 1 if mirrored else -1  # buy-side liquidity above a high taken: bearish
    _only(liquidity_sweeps(h, lo, c, length=STRUCTURE_LENGTH), {10: sign})


def test_liquidity_sweep_not_marked_when_the_first_wick_closes_beyond() -> None:
    close = list(STRUCTURE_CLOSE)
    close[10] = 13.8  # the first bar through 13.5 now closes above it: a break, not a sweep
    o, h, lo, c = _bars(close)
    assert not liquidity_sweeps(h, lo, c, length=STRUCTURE_LENGTH).any()
    _only(break_of_structure(h, lo, c, length=STRUCTURE_LENGTH), {10: 1})


@pytest.mark.parametrize("mirrored", [False, True])
def test_order_block_active_from_the_break_until_a_close_through_it(mirrored: bool) -> None:
    bars = _bars(STRUCTURE_CLOSE, bearish={7: 11.8})
    o, h, lo, c = _mirror(bars) if mirrored else bars
    sign = -1 if mirrored else 1
    ob = order_blocks(o, h, lo, c, length=STRUCTURE_LENGTH)
    assert ob.dtype == np.int8
    # bar 13 (low 12.5) stays above the zone [10.5, 12.3]; bars 14-15 overlap it; bar 16
    # closes at 10 < 10.5 and kills it; bar 17 overlaps the dead zone
    _only(ob, {14: sign, 15: sign})
    assert not order_blocks(o[:14], h[:14], lo[:14], c[:14], length=STRUCTURE_LENGTH).any()


def test_order_block_needs_a_down_candle_in_the_window() -> None:
    o, h, lo, c = _bars(STRUCTURE_CLOSE, bearish={4: 12.8})  # bar 4 < 11 - 2 * 3: outside the window
    assert not order_blocks(o, h, lo, c, length=STRUCTURE_LENGTH).any()
    o, h, lo, c = _bars(STRUCTURE_CLOSE)  # no down candle at all
    assert not order_blocks(o, h, lo, c, length=STRUCTURE_LENGTH).any()


def _reference(o: FloatArray, h: FloatArray, lo: FloatArray, c: FloatArray, length: int) -> dict[str, FloatArray]:
    """The patterns as docs/features.md words them, one bar at a time (slow, obvious)."""
    n = c.shape[0]
    out = {k: np.zeros(n) for k in ("sh", "sl", "hl", "ll", "fvg", "bos", "sweep", "ob")}
    out["hl"][:] = np.nan
    out["ll"][:] = np.nan
    hi = lo_lvl = np.nan
    hi_broken = lo_broken = hi_taken = lo_taken = False
    bull_zone: tuple[float, float] | None = None
    bear_zone: tuple[float, float] | None = None
    for t in range(n):
        s = t - length
        if s - length >= 0:
            others = [j for j in range(s - length, t + 1) if j != s]
            if all(h[s] > h[j] for j in others):
                out["sh"][t], hi, hi_broken, hi_taken = 1, h[s], False, False
            if all(lo[s] < lo[j] for j in others):
                out["sl"][t], lo_lvl, lo_broken, lo_taken = 1, lo[s], False, False
        out["hl"][t], out["ll"][t] = hi, lo_lvl
        if t >= 2:
            out["fvg"][t] = 1 if lo[t] > h[t - 2] else (-1 if h[t] < lo[t - 2] else 0)
        up = down = sweep_up = sweep_down = False
        if not np.isnan(hi):
            if not hi_broken and c[t] > hi:
                up = hi_broken = True
            if not hi_taken and h[t] > hi:
                hi_taken, sweep_up = True, c[t] < hi
        if not np.isnan(lo_lvl):
            if not lo_broken and c[t] < lo_lvl:
                down = lo_broken = True
            if not lo_taken and lo[t] < lo_lvl:
                lo_taken, sweep_down = True, c[t] > lo_lvl
        out["bos"][t] = int(up) - int(down)
        out["sweep"][t] = int(sweep_down) - int(sweep_up)
        state = 0
        if bull_zone is not None:
            if c[t] < bull_zone[0]:
                bull_zone = None
            elif lo[t] <= bull_zone[1] and h[t] >= bull_zone[0]:
                state += 1
        if bear_zone is not None:
            if c[t] > bear_zone[1]:
                bear_zone = None
            elif lo[t] <= bear_zone[1] and h[t] >= bear_zone[0]:
                state -= 1
        out["ob"][t] = state
        for sign in (1, -1):
            if out["bos"][t] != sign:
                continue
            for j in range(t - 1, max(t - 2 * length, 0) - 1, -1):
                if (c[j] < o[j]) if sign == 1 else (c[j] > o[j]):
                    if sign == 1:
                        bull_zone = (lo[j], h[j])
                    else:
                        bear_zone = (lo[j], h[j])
                    break
    return out


@pytest.mark.parametrize("source", ["sp500", "synth"])
@pytest.mark.parametrize("length", [2, 5])
def test_patterns_match_a_per_bar_loop(source: str, length: int, request: pytest.FixtureRequest) -> None:
    bars: OHLCV = request.getfixturevalue(source)
    o, h, lo, c = bars.open, bars.high, bars.low, bars.close
    ref = _reference(o, h, lo, c, length)
    sh, sl = swing_points(h, lo, length)
    hl, ll = swing_levels(h, lo, length)
    ms = market_structure(h, lo, c, length)
    assert np.array_equal(sh, ref["sh"] == 1) and np.array_equal(sl, ref["sl"] == 1)
    assert np.array_equal(hl, ref["hl"], equal_nan=True) and np.array_equal(ll, ref["ll"], equal_nan=True)
    assert np.array_equal(ms.high_level, hl, equal_nan=True) and np.array_equal(ms.low_level, ll, equal_nan=True)
    assert np.array_equal(fair_value_gaps(h, lo), ref["fvg"])
    assert np.array_equal(break_of_structure(h, lo, c, length), ref["bos"])
    assert np.array_equal(liquidity_sweeps(h, lo, c, length), ref["sweep"])
    assert np.array_equal(order_blocks(o, h, lo, c, length), ref["ob"])
    # every kind of event really occurs in the data, so the comparisons above are not vacuous
    for name in ("fvg", "bos", "sweep", "ob"):
        assert (ref[name] == 1).any() and (ref[name] == -1).any(), name


PatternFn = Callable[[OHLCV], list[npt.NDArray[np.generic]]]
PATTERNS: dict[str, PatternFn] = {
    "swing_points": lambda b: list(swing_points(b.high, b.low)),
    "swing_levels": lambda b: list(swing_levels(b.high, b.low)),
    "fair_value_gaps": lambda b: [fair_value_gaps(b.high, b.low)],
    "break_of_structure": lambda b: [break_of_structure(b.high, b.low, b.close)],
    "liquidity_sweeps": lambda b: [liquidity_sweeps(b.high, b.low, b.close)],
    "order_blocks": lambda b: [order_blocks(b.open, b.high, b.low, b.close)],
}


def _first_prefix_mismatch(fn: PatternFn, bars: OHLCV) -> int | None:
    """The first prefix length whose output differs from the full series' output cut there."""
    full = fn(bars)
    for m in range(1, len(bars) + 1):
        for part, whole in zip(fn(bars.head(m)), full, strict=True):
            if not np.array_equal(part, whole[:m], equal_nan=True):
                return m
    return None


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_patterns_on_every_prefix_equal_the_full_series_cut(name: str, synth: OHLCV) -> None:
    assert _first_prefix_mismatch(PATTERNS[name], synth.head(300)) is None


def _centred_swing_highs(bars: OHLCV, length: int = 5) -> list[npt.NDArray[np.generic]]:
    """Swings marked at the swing bar, as the smartmoneyconcepts package does: looks ahead."""
    h = bars.high
    out = np.zeros(h.shape[0], dtype=bool)
    if h.shape[0] >= 2 * length + 1:
        win = sliding_window_view(h, 2 * length + 1)
        mid = win[:, length]
        out[length : h.shape[0] - length] = (mid > win[:, :length].max(axis=1)) & (
            mid > win[:, length + 1 :].max(axis=1)
        )
    return [out]


def test_prefix_check_catches_a_centred_swing(synth: OHLCV) -> None:
    assert _first_prefix_mismatch(_centred_swing_highs, synth.head(300)) is not None


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: swing_points(np.ones(5), np.ones(4)), "'low' has 4 values but 'high' has 5"),
        (lambda: fair_value_gaps(np.ones(5), np.ones((5, 1))), "'low' must be 1-D"),
        (lambda: break_of_structure(np.ones(5), np.ones(5), np.ones(6)), "'close' has 6 values"),
        (lambda: order_blocks(np.ones(3), np.ones(5), np.ones(5), np.ones(5)), "'high' has 5 values but 'open'"),
        (lambda: liquidity_sweeps(np.ones(5), np.ones(5), np.ones(5), length=0), "length must be an integer >= 1"),
        (lambda: swing_points(np.ones(5), np.ones(5), length=2.5), "length must be an integer >= 1"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_raises_value_error_naming_the_column(call: Callable[[], object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        call()


def test_short_and_empty_series_give_no_events() -> None:
    for n in (0, 1, 2, 5):
        x = np.linspace(1.0, 2.0, n)
        sh, sl = swing_points(x, x)
        assert sh.shape == (n,) and not sh.any() and not sl.any()
        assert fair_value_gaps(x + 1.0, x).shape == (n,)
        assert not order_blocks(x, x + 1.0, x, x).any()
