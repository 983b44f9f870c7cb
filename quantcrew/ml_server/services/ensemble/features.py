"""The 16 engineered features per daily bar for the LSTM / Transformer ensemble (causal).

Row ``t`` of :func:`build_features` uses bars ``<= t`` only. Rolling windows end at ``t``
and are summed as explicit elementwise adds over their offsets (no cumulative-sum
differences, no strided reductions whose blocking depends on the array length), and the
smart-money-concept columns come from :mod:`quantcrew.ml_server.services.ensemble.smc`, which marks
each pattern at the bar that confirms it. So row ``t`` is the same whether the series stops
at ``t`` or runs on. Rows ``< WARMUP`` may hold NaN (a window not yet full); rows
``>= WARMUP`` are finite for any positive prices, constant ones included.

Columns (``r_s = log(close_s / close_{s-1})``; every window ends at ``t`` and includes it;
"std" is the population std; docs/features.md has the full table):

* ``ret_1``, ``ret_5``, ``ret_20``: ``log(close_t / close_{t-k})``, raw (decimal);
* ``vol_10``: std of ``r`` over the last 10 returns, raw (decimal, daily);
* ``vol_ratio``: ``vol_10 / vol_60`` (1 when ``vol_60 <= 1e-12``);
* ``trend_20_60``: ``SMA20 / SMA60 - 1`` of the close;
* ``zscore_20``: ``(close_t - SMA20) / std20`` of the close (0 when the 20 closes are flat);
* ``range_ratio``: true range / its 20-bar mean (1 when that mean is ``<= 1e-12 * close``);
* ``close_location``: ``(close - low) / (high - low)`` in ``[0, 1]`` (0.5 when high == low);
* ``volume_z``: z-score of ``log1p(volume)`` over 20 bars (0 when flat);
* ``volume_ratio``: ``log((1 + mean5(volume)) / (1 + mean20(volume)))``;
* ``swing_position``: ``2 (close - S) / (H - S) - 1`` clipped to ``[-3, 3]`` with ``H`` / ``S``
  the last confirmed swing high / low (-1 at the swing low, +1 at the swing high; 0 while
  there is no valid range ``H > S``);
* ``order_block``: +1 / -1 while price overlaps the active bullish / bearish order block;
* ``fair_value_gap``, ``liquidity_sweep``, ``break_of_structure``: sign of the most recent
  confirmed event times ``0.5 ** (age / half_life)`` (age 0 at the confirmation bar; half-lives
  in :data:`HALF_LIVES`); 0 before the first event.

Volume ``None`` gives 0 in both volume columns. The lead's scaler fits on rows ``>= WARMUP``;
the raw columns range from ~1e-2 (returns, vol) to O(1).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.services.ensemble.smc import fair_value_gaps, market_structure, order_blocks
from quantcrew.ml_server.services.rolling import window_sum

__all__ = ["FEATURE_NAMES", "HALF_LIVES", "SWING_LENGTH", "WARMUP", "build_features"]

FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_20",
    "vol_10",
    "vol_ratio",
    "trend_20_60",
    "zscore_20",
    "range_ratio",
    "close_location",
    "volume_z",
    "volume_ratio",
    "swing_position",
    "order_block",
    "fair_value_gap",
    "liquidity_sweep",
    "break_of_structure",
)
WARMUP: int = 60  # vol_60 needs returns r_1..r_60, so bar 60 is the first complete row
SWING_LENGTH: int = 5  # bars each side of a swing: a swing is confirmed 5 bars after its extreme
HALF_LIVES: dict[str, float] = {"fair_value_gap": 5.0, "liquidity_sweep": 5.0, "break_of_structure": 10.0}
_TINY_VOL = 1e-12  # log-return std below this counts as zero
_FLAT_REL = 1e-12  # a price std / mean range below this fraction of the price counts as flat
_FLAT_LOG_VOLUME = 1e-9  # a log-volume std below this counts as flat
_SWING_CLIP = 3.0

FloatArray = npt.NDArray[np.float64]
Int8Array = npt.NDArray[np.int8]


def build_features(
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike | None,
) -> FloatArray:
    """Build the 16 features of every bar, in :data:`FEATURE_NAMES` order.

    Args:
        open_: Opens, shape ``(n,)``, positive and finite.
        high: Highs, shape ``(n,)``, positive, finite, ``>= low``.
        low: Lows, shape ``(n,)``, positive and finite.
        close: Closes, shape ``(n,)``, positive and finite.
        volume: Volumes, shape ``(n,)``, finite and ``>= 0``; None sets ``volume_z`` and
            ``volume_ratio`` to 0.

    Returns:
        float64 array of shape ``(n, 16)``. Rows ``< WARMUP`` may hold NaN; rows ``>= WARMUP``
        are finite.

    Raises:
        ValueError: A column not 1-D or of another length than ``open`` (the message names
            it), non-finite or non-positive prices, ``high < low``, negative or non-finite
            volume.
    """
    o, h, lo, c, v = _validated(open_, high, low, close, volume)
    n = c.shape[0]
    out = np.full((n, len(FEATURE_NAMES)), np.nan)
    if n == 0:
        return out
    cols = dict(zip(FEATURE_NAMES, out.T, strict=True))  # views: writing a column fills `out`

    logc = np.log(c)
    r = np.full(n, np.nan)
    r[1:] = logc[1:] - logc[:-1]
    for k in (1, 5, 20):
        if n > k:
            cols[f"ret_{k}"][k:] = logc[k:] - logc[:-k]
    _, vol_10 = _mean_std(r, 10, first=10)
    _, vol_60 = _mean_std(r, 60, first=60)
    cols["vol_10"][:] = vol_10
    ratio = cols["vol_ratio"]
    ratio[:] = vol_60  # keeps the NaN of an unfilled window
    big = vol_60 > _TINY_VOL
    ratio[big] = vol_10[big] / vol_60[big]
    ratio[~np.isnan(vol_60) & ~big] = 1.0

    sma_20, std_20 = _mean_std(c, 20, first=19)
    sma_60 = _rolling_sum(c, 60, first=59) / 60
    cols["trend_20_60"][:] = sma_20 / sma_60 - 1.0
    cols["zscore_20"][:] = _safe_ratio(c - sma_20, std_20, std_20 > _FLAT_REL * sma_20, fill=0.0)

    tr = np.full(n, np.nan)
    tr[1:] = np.maximum(h[1:], c[:-1]) - np.minimum(lo[1:], c[:-1])
    atr_20 = _rolling_sum(tr, 20, first=20) / 20
    cols["range_ratio"][:] = _safe_ratio(tr, atr_20, atr_20 > _FLAT_REL * c, fill=1.0)
    spread = h - lo
    cols["close_location"][:] = np.clip(_safe_ratio(c - lo, spread, spread > 0.0, fill=0.5), 0.0, 1.0)

    if v is None:
        cols["volume_z"][:] = 0.0
        cols["volume_ratio"][:] = 0.0
    else:
        lv = np.log1p(v)
        mean_lv, std_lv = _mean_std(lv, 20, first=19)
        cols["volume_z"][:] = _safe_ratio(lv - mean_lv, std_lv, std_lv > _FLAT_LOG_VOLUME, fill=0.0)
        mean_5 = _rolling_sum(v, 5, first=19) / 5  # first=19: both windows complete on the same row
        mean_20 = _rolling_sum(v, 20, first=19) / 20
        cols["volume_ratio"][:] = np.log((1.0 + mean_5) / (1.0 + mean_20))

    structure = market_structure(h, lo, c, SWING_LENGTH)
    cols["swing_position"][:] = _swing_position(c, structure.high_level, structure.low_level)
    cols["order_block"][:] = order_blocks(o, h, lo, c, SWING_LENGTH)
    cols["fair_value_gap"][:] = _decayed(fair_value_gaps(h, lo), HALF_LIVES["fair_value_gap"])
    cols["liquidity_sweep"][:] = _decayed(structure.sweep, HALF_LIVES["liquidity_sweep"])
    cols["break_of_structure"][:] = _decayed(structure.bos, HALF_LIVES["break_of_structure"])
    return out


def _rolling_sum(x: FloatArray, w: int, *, first: int) -> FloatArray:
    return window_sum(x, w, first=first, fill=np.nan)


def _mean_std(x: FloatArray, w: int, *, first: int) -> tuple[FloatArray, FloatArray]:
    """Rolling mean and population std over ``w`` bars ending at ``t`` (two-pass), NaN before ``first``."""
    n = x.shape[0]
    mean = _rolling_sum(x, w, first=first) / w
    var = np.full(n, np.nan)
    if first < n:
        acc = np.zeros(n - first)
        for k in range(w):
            d = x[first - k : n - k] - mean[first:]
            acc += d * d
        var[first:] = acc / w
    return mean, np.sqrt(var)


def _safe_ratio(num: FloatArray, den: FloatArray, ok: npt.NDArray[np.bool_], *, fill: float) -> FloatArray:
    """``num / den`` where ``ok``, ``fill`` where not, NaN where either input is NaN."""
    out = np.where(np.isnan(num) | np.isnan(den), np.nan, fill)
    np.divide(num, den, out=out, where=ok)
    return out


def _swing_position(c: FloatArray, top: FloatArray, bottom: FloatArray) -> FloatArray:
    with np.errstate(invalid="ignore"):
        ok = top > bottom  # False where either is NaN (no swing confirmed yet)
    pos = np.zeros(c.shape[0])
    pos[ok] = 2.0 * (c[ok] - bottom[ok]) / (top[ok] - bottom[ok]) - 1.0
    return np.clip(pos, -_SWING_CLIP, _SWING_CLIP)


def _decayed(events: Int8Array, half_life: float) -> FloatArray:
    """Sign of the last event times ``0.5 ** (age / half_life)``; 0 before the first event."""
    n = events.shape[0]
    idx = np.maximum.accumulate(np.where(events != 0, np.arange(n), -1))
    seen = idx >= 0
    out = np.zeros(n)
    age = (np.arange(n) - idx)[seen]
    out[seen] = events[idx[seen]] * np.exp2(-age / half_life)
    return out


def _validated(
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike | None,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray | None]:
    named = {"open": open_, "high": high, "low": low, "close": close}
    if volume is not None:
        named["volume"] = volume
    arrays: dict[str, FloatArray] = {}
    for name, raw in named.items():
        try:
            a = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column {name!r} must be numeric: {exc}") from exc
        if a.ndim != 1:
            raise ValueError(f"column {name!r} must be 1-D, got shape {a.shape}")
        if arrays and a.shape[0] != arrays["open"].shape[0]:
            raise ValueError(f"column {name!r} has {a.shape[0]} values but 'open' has {arrays['open'].shape[0]}")
        arrays[name] = a
    for name in ("open", "high", "low", "close"):
        a = arrays[name]
        bad = np.flatnonzero(~(np.isfinite(a) & (a > 0.0)))
        if bad.size:
            raise ValueError(f"column {name!r} must be positive and finite; row {int(bad[0])} is {a[bad[0]]}")
    bad = np.flatnonzero(arrays["high"] < arrays["low"])
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"column 'high' is below 'low' at row {i}: {arrays['high'][i]} < {arrays['low'][i]}")
    vol = arrays.get("volume")
    if vol is not None:
        bad = np.flatnonzero(~(np.isfinite(vol) & (vol >= 0.0)))
        if bad.size:
            raise ValueError(f"column 'volume' must be finite and >= 0; row {int(bad[0])} is {vol[bad[0]]}")
    return arrays["open"], arrays["high"], arrays["low"], arrays["close"], vol
