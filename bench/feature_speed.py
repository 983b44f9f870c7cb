"""Ensemble features on 25,000 daily bars: vectorised numpy vs a naive per-bar Python loop.

Rows of the table (all measured in this run, on the same synthetic regime-switching bars):

* ``build_features``: the full 16-column set of
  :func:`quantcrew.ml_server.services.ensemble.features.build_features` on ``--bars`` bars.
* ``SMC patterns, vectorised``: the smart-money-concept part alone (swings, levels, breaks,
  sweeps, fair value gaps, order blocks) on the same bars.
* ``SMC patterns, per-bar loop``: the BASELINE, the same patterns written as one plain Python
  loop over the bars (the obvious implementation), timed on ``--loop-bars`` bars and scaled
  linearly to ``--bars`` (each bar does O(length) work, so the loop is linear in n). Its
  output is checked equal to the vectorised one on those bars before anything is timed.

Target: ``build_features`` under 0.5 s (500 ms) for 25,000 bars.

Run: .venv/bin/python bench/feature_speed.py [--bars 25000] [--runs 30] [--loop-bars 2500]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from _table import print_table, summary

from quantcrew.data.synthetic import generate_regime_market
from quantcrew.ml_server.services.ensemble.features import SWING_LENGTH, build_features
from quantcrew.ml_server.services.ensemble.smc import fair_value_gaps, market_structure, order_blocks

FloatArray = npt.NDArray[np.float64]
TARGET_MS = 500.0


def _loop_patterns(o: FloatArray, h: FloatArray, lo: FloatArray, c: FloatArray, length: int) -> FloatArray:
    """Levels, FVG, BOS, sweeps and order-block state, one bar at a time: the baseline."""
    n = len(c)
    out = np.zeros((n, 6))
    hi = lo_lvl = float("nan")
    hi_broken = lo_broken = hi_taken = lo_taken = False
    bull: tuple[float, float] | None = None
    bear: tuple[float, float] | None = None
    for t in range(n):
        s = t - length
        if s >= length:
            if all(h[s] > h[j] for j in range(s - length, t + 1) if j != s):
                hi, hi_broken, hi_taken = h[s], False, False
            if all(lo[s] < lo[j] for j in range(s - length, t + 1) if j != s):
                lo_lvl, lo_broken, lo_taken = lo[s], False, False
        fvg = (1 if lo[t] > h[t - 2] else -1 if h[t] < lo[t - 2] else 0) if t >= 2 else 0
        up = down = sweep_up = sweep_down = False
        if hi == hi:  # not NaN
            if not hi_broken and c[t] > hi:
                up = hi_broken = True
            if not hi_taken and h[t] > hi:
                hi_taken, sweep_up = True, c[t] < hi
        if lo_lvl == lo_lvl:
            if not lo_broken and c[t] < lo_lvl:
                down = lo_broken = True
            if not lo_taken and lo[t] < lo_lvl:
                lo_taken, sweep_down = True, c[t] > lo_lvl
        bos = int(up) - int(down)
        state = 0
        if bull is not None:
            if c[t] < bull[0]:
                bull = None
            elif lo[t] <= bull[1] and h[t] >= bull[0]:
                state += 1
        if bear is not None:
            if c[t] > bear[1]:
                bear = None
            elif lo[t] <= bear[1] and h[t] >= bear[0]:
                state -= 1
        if bos:
            for j in range(t - 1, max(t - 2 * length, 0) - 1, -1):
                if bos == 1 and c[j] < o[j]:
                    bull = (lo[j], h[j])
                    break
                if bos == -1 and c[j] > o[j]:
                    bear = (lo[j], h[j])
                    break
        out[t] = (hi, lo_lvl, fvg, bos, int(sweep_down) - int(sweep_up), state)
    return out


def _vector_patterns(o: FloatArray, h: FloatArray, lo: FloatArray, c: FloatArray, length: int) -> FloatArray:
    ms = market_structure(h, lo, c, length)
    return np.column_stack(
        [ms.high_level, ms.low_level, fair_value_gaps(h, lo), ms.bos, ms.sweep, order_blocks(o, h, lo, c, length)]
    )


def _time_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=25_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--loop-bars", type=int, default=2_500)
    parser.add_argument("--loop-runs", type=int, default=10)
    args = parser.parse_args()
    bars = generate_regime_market(args.bars, seed=0).bars
    o, h, lo, c, v = bars.open, bars.high, bars.low, bars.close, bars.volume
    k = args.loop_bars
    expected = _vector_patterns(o[:k], h[:k], lo[:k], c[:k], SWING_LENGTH)
    got = _loop_patterns(o[:k], h[:k], lo[:k], c[:k], SWING_LENGTH)
    if not np.array_equal(expected, got, equal_nan=True):
        raise SystemExit("the per-bar loop and the vectorised patterns disagree: fix before timing")

    full = summary(_time_ms(lambda: build_features(o, h, lo, c, v), args.runs))
    vec = summary(_time_ms(lambda: _vector_patterns(o, h, lo, c, SWING_LENGTH), args.runs))
    scale = args.bars / k
    loop_raw = _time_ms(lambda: _loop_patterns(o[:k], h[:k], lo[:k], c[:k], SWING_LENGTH), args.loop_runs, warmup=1)
    loop = summary([t * scale for t in loop_raw])

    def per_bar_us(ms: float) -> float:
        return ms * 1000.0 / float(args.bars)

    rows = [
        [
            "build_features (16 columns)",
            args.bars,
            args.runs,
            full["median"],
            full["p95"],
            full["p99"],
            per_bar_us(full["median"]),
            f"{'PASS' if full['p95'] < TARGET_MS else 'FAIL'} (p95 vs {TARGET_MS:.0f} ms)",
        ],
        [
            "SMC patterns, vectorised",
            args.bars,
            args.runs,
            vec["median"],
            vec["p95"],
            vec["p99"],
            per_bar_us(vec["median"]),
            f"x{loop['median'] / vec['median']:.0f} faster than the loop",
        ],
        [
            f"SMC patterns, per-bar loop (baseline; {k} bars x{scale:g})",
            args.bars,
            args.loop_runs,
            loop["median"],
            loop["p95"],
            loop["p99"],
            per_bar_us(loop["median"]),
            "same output as vectorised (checked)",
        ],
    ]
    print(f"ensemble features on {args.bars} synthetic daily bars (ms); target: build_features < {TARGET_MS:.0f} ms")
    print_table(["path", "bars", "runs", "median", "p95", "p99", "us/bar", "note"], rows)


if __name__ == "__main__":
    main()
