"""Inputs and labels of the execution network: causal market conditions, targets, the input scaler.

Numpy only. :func:`market_inputs` row ``t`` uses bars ``<= t``; :func:`execution_targets`
looks ahead by construction (they are labels, for training only).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "EXECUTION_INPUTS",
    "MARKET_WARMUP",
    "STRATEGIC_INPUTS",
    "InputScaler",
    "SeededRows",
    "execution_targets",
    "market_inputs",
]

FloatArray = npt.NDArray[np.float64]

EXECUTION_INPUTS: tuple[str, ...] = (
    "signal",  # -1 down, 0 flat, +1 up (the strategic signal)
    "confidence",  # probability of the chosen class, [0, 1]
    "predictive_entropy",  # [0, 1]
    "divergence_metric",  # [0, 1]
    "agreement_score",  # [0, 1]
    "ret_1",  # log return over 1 bar
    "ret_5",  # log return over 5 bars
    "vol_10",  # std of 1-bar log returns over 10 bars
    "vol_ratio",  # vol_10 / vol_60
    "range",  # (high - low) / close of the last bar
    "volume_z",  # z-score of log volume over 20 bars (0 when unknown)
)
STRATEGIC_INPUTS: int = 5  # the leading columns that come from the strategic ensemble
MARKET_WARMUP: int = 60  # vol_60 needs returns of bars 1..60: row 60 is the first complete one
_VOLUME_WINDOW = 20
_MIN_STD = 1e-8  # a column varying less than this is centred only (scale 1), never blown up


# --- market inputs and labels ---------------------------------------------------------------


def _rolling_mean_std(x: FloatArray, w: int) -> tuple[FloatArray, FloatArray]:
    """Mean and population std of ``x[t-w+1..t]`` at ``t`` (NaN before ``w - 1``).

    Sums over the ``w`` offsets with elementwise operations, so each row depends on its own
    window only and is bit-for-bit the same whatever comes after it.
    """
    n = x.shape[0]
    mean_out, std_out = np.full(n, np.nan), np.full(n, np.nan)
    if n < w:
        return mean_out, std_out
    m = n - w + 1
    total = np.zeros(m)
    for k in range(w):
        total += x[k : k + m]
    mean = total / w
    sq = np.zeros(m)
    for k in range(w):
        d = x[k : k + m] - mean
        sq += d * d
    mean_out[w - 1 :], std_out[w - 1 :] = mean, np.sqrt(sq / w)
    return mean_out, std_out


def _columns(*arrays: npt.ArrayLike | None) -> list[FloatArray]:
    out = [np.asarray(a, dtype=np.float64) for a in arrays if a is not None]
    n = out[0].shape[0] if out and out[0].ndim == 1 else -1
    if any(a.ndim != 1 or a.shape[0] != n for a in out):
        raise ValueError(f"price columns must be 1-D and of one length, got shapes {[a.shape for a in out]}")
    return out


def _check_prices(open_: FloatArray, high: FloatArray, low: FloatArray, close: FloatArray) -> None:
    for name, col in (("open", open_), ("high", high), ("low", low), ("close", close)):
        if not (np.all(np.isfinite(col)) and np.all(col > 0.0)):
            raise ValueError(f"{name} prices must be finite and positive")


def _log_returns(close: FloatArray) -> FloatArray:
    """``r[t] = log(close[t] / close[t-1])``, NaN at ``t = 0``."""
    logc = np.log(close)
    r = np.full(close.shape[0], np.nan)
    r[1:] = logc[1:] - logc[:-1]
    return r


def _vol(close: FloatArray, w: int) -> FloatArray:
    """Std of the ``w`` one-bar log returns ending at ``t`` (NaN before ``t = w``)."""
    r = _log_returns(close)
    out = np.full(close.shape[0], np.nan)
    out[1:] = _rolling_mean_std(r[1:], w)[1]
    return out


def market_inputs(
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    volume: npt.ArrayLike | None,
) -> FloatArray:
    """The market columns of :data:`EXECUTION_INPUTS`, one row per bar, computed causally.

    Columns ``ret_1, ret_5, vol_10, vol_ratio, range, volume_z``. Row ``t`` uses bars ``<= t``
    only and does not change by a single bit when later bars change. ``vol_10`` / ``vol_60``
    are population stds of the last 10 / 60 one-bar log returns; ``vol_ratio`` is 1 when
    ``vol_60`` is 0. ``volume_z`` is ``(v_t - mean) / std`` of ``v = log(1 + volume)`` over the
    last 20 bars (``log1p`` so that a zero-volume bar stays finite); 0 when ``volume`` is None
    or the 20 values are flat.

    Args:
        open_: Opens, shape ``(n,)`` (checked, not used by these columns).
        high: Highs, shape ``(n,)``.
        low: Lows, shape ``(n,)``.
        close: Closes, shape ``(n,)``.
        volume: Volumes, shape ``(n,)``, or None when unknown.

    Returns:
        Float64 array of shape ``(n, 6)``; rows before :data:`MARKET_WARMUP` are NaN.

    Raises:
        ValueError: Columns of different lengths or not 1-D, non-positive or non-finite prices,
            negative or non-finite volumes.
    """
    o, h, lo, c = _columns(open_, high, low, close)
    _check_prices(o, h, lo, c)
    n = c.shape[0]
    logc = np.log(c)
    ret_1 = np.full(n, np.nan)
    ret_1[1:] = logc[1:] - logc[:-1]
    ret_5 = np.full(n, np.nan)
    ret_5[5:] = logc[5:] - logc[:-5]
    vol_10, vol_60 = _vol(c, 10), _vol(c, 60)
    vol_ratio = np.divide(vol_10, vol_60, out=np.ones(n), where=vol_60 > 0.0)
    volume_z = np.zeros(n)
    if volume is not None:
        (v,) = _columns(volume)
        if v.shape[0] != n or not (np.all(np.isfinite(v)) and np.all(v >= 0.0)):
            raise ValueError("volume must be finite, non-negative and as long as the prices")
        lv = np.log1p(v)
        mean, std = _rolling_mean_std(lv, _VOLUME_WINDOW)
        volume_z = np.divide(lv - mean, std, out=np.zeros(n), where=std > 0.0)
    out = np.column_stack([ret_1, ret_5, vol_10, vol_ratio, (h - lo) / c, volume_z])
    out[:MARKET_WARMUP] = np.nan
    return out


def execution_targets(
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    close: npt.ArrayLike,
    signal: npt.ArrayLike,
    *,
    horizon: int = 5,
    wait_bps: float = 10.0,
    risk_multiple: float = 2.0,
) -> tuple[FloatArray, npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Training labels: the size the signal deserved and whether waiting one bar paid.

    Size: ``clip(signal_t * (close[t+h] / close[t] - 1) / (risk_multiple * vol_10[t] * sqrt(h)), 0, 1)``,
    0 where the signal is flat. Timing: 1 (wait) when the next bar's open beats ``close[t]`` by
    more than ``wait_bps`` for the side (a buy: ``open[t+1] < close[t] * (1 - wait_bps / 1e4)``;
    a sell: ``open[t+1] > close[t] * (1 + wait_bps / 1e4)``), else 0 (now); a flat signal is 0.

    Args:
        open_, high, low, close: Prices, shape ``(n,)``.
        signal: The strategic signal per bar, -1, 0 or +1 (NaN: no signal, row invalid).
        horizon: Bars ahead the size is judged over (>= 1).
        wait_bps: Improvement over the close, in basis points, that makes waiting worth it.
        risk_multiple: How many horizon-scaled vols of move earn a full size (> 0).

    Returns:
        ``(size, timing, valid)``: float64 in ``[0, 1]``, int64 in ``{0, 1}``, bool; shape ``(n,)``.
        ``valid`` is False where ``t + horizon`` runs past the data, where the market inputs are
        NaN (``t < MARKET_WARMUP``), where the signal is NaN, or where ``vol_10`` is 0 (no scale);
        invalid rows hold size 0 and timing 0.

    Raises:
        ValueError: Bad shapes or prices, a signal other than -1/0/+1/NaN, a bad parameter.
    """
    if horizon < 1 or not math.isfinite(wait_bps) or wait_bps < 0.0 or not risk_multiple > 0.0:
        raise ValueError(f"need horizon >= 1, wait_bps >= 0, risk_multiple > 0; got {horizon}, {wait_bps}, "
                         f"{risk_multiple}")
    o, h, lo, c, s = _columns(open_, high, low, close, signal)
    _check_prices(o, h, lo, c)
    known = np.isfinite(s)
    if not np.all(np.isin(s[known], (-1.0, 0.0, 1.0))):
        raise ValueError("signal must hold -1, 0 or +1 (NaN for no signal)")
    n = c.shape[0]
    vol_10 = _vol(c, 10)
    valid = known & (np.arange(n) >= MARKET_WARMUP) & (np.arange(n) + horizon < n)
    valid &= np.nan_to_num(vol_10) > 0.0
    sig = np.where(known, s, 0.0)

    size = np.zeros(n)
    timing = np.zeros(n, dtype=np.int64)
    m = n - horizon
    if m > 0:
        move = c[horizon:] / c[:m] - 1.0
        scale = risk_multiple * vol_10[:m] * math.sqrt(horizon)
        raw = np.divide(sig[:m] * move, scale, out=np.zeros(m), where=valid[:m])
        size[:m] = np.clip(raw, 0.0, 1.0)
        gap = wait_bps / 1e4
        nxt, now = o[1 : m + 1], c[:m]
        wait = ((sig[:m] > 0) & (nxt < now * (1.0 - gap))) | ((sig[:m] < 0) & (nxt > now * (1.0 + gap)))
        timing[:m] = wait & valid[:m]
    size[~valid] = 0.0
    return size, timing, valid


@dataclass(frozen=True, eq=False)
class SeededRows:
    """One request's scaled network inputs and the seed of its dropout masks.

    Its length is its rows, so that the dynamic batcher counts rows, not requests.
    """

    x: npt.NDArray[np.float32]
    seed: int

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True, eq=False)
class InputScaler:
    """Per-column standardisation of the execution inputs.

    The leading :data:`STRATEGIC_INPUTS` columns (signal, confidence, entropy, divergence,
    agreement) pass through unscaled (mean 0, std 1): they are already bounded, and keeping
    them in their own units means a confidence of 0.8 reaches every trained net as 0.8,
    whatever data the scaler was fitted on. The market columns are standardised; one whose
    std is below 1e-8 is centred only (std 1), so a constant column never blows up.

    Attributes:
        mean: Per-column mean, float64, shape ``(D,)``.
        std: Per-column scale, float64, shape ``(D,)``, positive.
    """

    mean: FloatArray
    std: FloatArray

    @classmethod
    def fit(cls, x: npt.ArrayLike, *, passthrough: int = STRATEGIC_INPUTS) -> InputScaler:
        """Fit on rows of raw inputs, shape ``(n, D)``; the first ``passthrough`` columns stay unscaled.

        Raises:
            ValueError: Not 2-D, no rows, non-finite values, ``passthrough`` outside ``[0, D]``.
        """
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] == 0:
            raise ValueError(f"x must be 2-D with at least one row, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError("x must be finite (drop the rows execution_targets marks invalid)")
        if not 0 <= passthrough <= a.shape[1]:
            raise ValueError(f"passthrough must be in [0, {a.shape[1]}], got {passthrough}")
        mean, std = a.mean(axis=0), a.std(axis=0)
        std[std < _MIN_STD] = 1.0
        mean[:passthrough], std[:passthrough] = 0.0, 1.0
        return cls(mean=mean, std=std)

    def transform(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """``(x - mean) / std`` as float32, shape ``(n, D)`` (NaN stays NaN).

        Raises:
            ValueError: ``x`` is not 2-D with the fitted number of columns.
        """
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != self.mean.shape[0]:
            raise ValueError(f"expected x of shape (n, {self.mean.shape[0]}), got {a.shape}")
        out: npt.NDArray[np.float32] = ((a - self.mean) / self.std).astype(np.float32)
        return out

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-ready form."""
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InputScaler:
        """Rebuild from :meth:`to_dict`.

        Raises:
            ValueError: Missing keys, lengths that differ, non-finite means, scales not finite and positive.
        """
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"a scaler needs numeric 'mean' and 'std' lists: {exc}") from exc
        if mean.ndim != 1 or mean.shape != std.shape or mean.shape[0] == 0:
            raise ValueError(f"scaler 'mean' and 'std' must be non-empty lists of one length, got {mean.shape}, "
                             f"{std.shape}")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0.0)):
            raise ValueError("scaler 'mean' must be finite and 'std' finite and positive")
        return cls(mean=mean, std=std)
