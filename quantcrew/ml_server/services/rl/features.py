"""Observation features of the RL trading environment, built from OHLCV bars (causal).

Every feature of row ``t`` uses bars ``<= t`` only: rolling windows end at ``t`` and are
computed as explicit sums over their ``w`` offsets (elementwise numpy operations), so row
``t`` is bit-for-bit the same whether the series stops at ``t`` or runs on (the no-look-ahead
test builds on ``bars[:t + 1]`` and compares). Rows before :data:`WARMUP` are zeros and must
not be used.

Features (``r_s = log(close_s / close_{s-1})``):

* ``ret_1``, ``ret_5``, ``ret_20``: ``log(close_t / close_{t-k})``;
* ``vol_10``, ``vol_20``: realised volatility ``sqrt(mean(r^2))`` over the last 10 / 20 returns;
* ``vol_ratio``: ``vol_10 / vol_60`` (1 when ``vol_60`` is 0);
* ``trend_20_60``: ``log(SMA20 / SMA60)`` of the close;
* ``price_z_20``: ``(close_t - SMA20) / std20`` of the close (population std over the same 20
  closes, so ``|z| <= sqrt(19)``; 0 when the 20 closes are flat): the mean-reversion signal;
* ``range_14``: mean of ``log(high / low)`` over the last 14 bars;
* ``rsi_14``: Cutler's RSI over the last 14 close changes (simple means, not Wilder's
  smoothing, so it has no memory of the series start), scaled to ``[-1, 1]`` as
  ``(gains - losses) / (gains + losses)`` (0 when the closes are flat).

Regime probabilities, when given, are appended as columns ``p_<name>``; their causality (the
regime family's FILTERED probabilities) is the caller's job.

``forward_returns[t] = close[t+1] / close[t] - 1`` is the P&L of the position chosen at ``t``:
it is the environment's payoff, never an observation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.services.rolling import window_sum

__all__ = [
    "CLIP",
    "FEATURE_NAMES",
    "REGIME_PREFIX",
    "WARMUP",
    "FeatureScaler",
    "ObservationFeatures",
    "build_features",
]

FloatArray = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

FEATURE_NAMES: tuple[str, ...] = (
    "ret_1",
    "ret_5",
    "ret_20",
    "vol_10",
    "vol_20",
    "vol_ratio",
    "trend_20_60",
    "price_z_20",
    "range_14",
    "rsi_14",
)
WARMUP: int = 60  # vol_60 needs 60 returns, i.e. bars 0..60: row 60 is the first valid one
REGIME_PREFIX = "p_"
CLIP = 5.0  # scaled features are clipped to [-CLIP, CLIP]
_MIN_SCALE = 1e-8  # a column varying less than this over the fit rows is centred, not scaled
_FLAT_REL = 1e-12  # a close std below this fraction of the mean counts as flat (z = 0)


@dataclass(frozen=True, eq=False)
class ObservationFeatures:
    """Per-bar features and what the environment pays.

    Attributes:
        names: Column names of ``values`` (:data:`FEATURE_NAMES`, then ``p_<regime>``).
        values: Raw (unscaled) features, float32, shape ``(T, F)``; rows ``< warmup`` are 0.
        forward_returns: ``close[t+1] / close[t] - 1``, float64, shape ``(T,)``; the last is 0.
        price_z: The raw ``price_z_20`` in float64, shape ``(T,)`` (0 before bar 19), for the
            contrarian reward.
        warmup: First valid row.
    """

    names: tuple[str, ...]
    values: Float32Array
    forward_returns: FloatArray
    price_z: FloatArray
    warmup: int

    def __len__(self) -> int:
        return int(self.values.shape[0])


def build_features(
    close: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    *,
    regime_probs: npt.ArrayLike | None = None,
    regime_names: Sequence[str] = (),
) -> ObservationFeatures:
    """Build the observation features of every bar.

    Args:
        close: Closes, shape ``(T,)``, positive and finite.
        high: Highs, shape ``(T,)``.
        low: Lows, shape ``(T,)``.
        regime_probs: Optional regime probabilities aligned with the bars, shape ``(T, R)``,
            appended unscaled as columns ``p_<name>``.
        regime_names: The ``R`` regime names, in column order.

    Returns:
        The features, forward returns and raw price z-score.

    Raises:
        InvalidInputError: Fewer than ``WARMUP + 2`` bars, ragged or non-positive prices,
            regime probabilities of the wrong shape or not finite.
    """
    c, h, lo = _prices(close, high, low)
    n = c.shape[0]
    logc = np.log(c)
    ret = np.zeros(n)
    ret[1:] = logc[1:] - logc[:-1]

    cols: dict[str, FloatArray] = {}
    for k in (1, 5, 20):
        col = np.zeros(n)
        col[k:] = logc[k:] - logc[:-k]
        cols[f"ret_{k}"] = col
    sq = ret * ret
    vol_10 = np.sqrt(_rolling_mean(sq, 10, first=10))
    vol_60 = np.sqrt(_rolling_mean(sq, 60, first=60))
    cols["vol_10"] = vol_10
    cols["vol_20"] = np.sqrt(_rolling_mean(sq, 20, first=20))
    cols["vol_ratio"] = np.divide(vol_10, vol_60, out=np.ones(n), where=vol_60 > 0.0)
    sma_20 = _rolling_mean(c, 20, first=19)
    sma_60 = _rolling_mean(c, 60, first=59)
    cols["trend_20_60"] = np.log(np.divide(sma_20, sma_60, out=np.ones(n), where=sma_60 > 0.0))
    price_z = _price_z(c, sma_20, 20)
    cols["price_z_20"] = price_z
    cols["range_14"] = _rolling_mean(np.log(h / lo), 14, first=13)
    cols["rsi_14"] = _rsi(c, 14)

    names = list(FEATURE_NAMES)
    blocks = [np.column_stack([cols[name] for name in FEATURE_NAMES])]
    if regime_probs is not None or regime_names:
        probs = _regime_block(regime_probs, regime_names, n)
        names.extend(REGIME_PREFIX + str(name) for name in regime_names)
        blocks.append(probs)
    values = np.concatenate(blocks, axis=1)
    values[:WARMUP] = 0.0

    forward = np.zeros(n)
    forward[:-1] = c[1:] / c[:-1] - 1.0
    return ObservationFeatures(
        names=tuple(names),
        values=values.astype(np.float32),
        forward_returns=forward,
        price_z=price_z,
        warmup=WARMUP,
    )


@dataclass(eq=False)
class FeatureScaler:
    """Per-column standardisation fitted on the training rows, clipped to ``[-CLIP, CLIP]``.

    Columns named ``p_*`` (regime probabilities, already in ``[0, 1]``) pass through
    unscaled (mean 0, scale 1). A column whose std over the fit rows is below ``1e-8`` is
    centred only (scale 1), so a constant column never blows up.

    Attributes:
        names: Column names (may be empty when the scaler was fitted without names).
        mean: Per-column mean, float64, shape ``(F,)``.
        scale: Per-column std (floored as above), float64, shape ``(F,)``.
    """

    names: tuple[str, ...]
    mean: FloatArray
    scale: FloatArray

    @classmethod
    def fit(cls, values: npt.ArrayLike, start: int, end: int, *, names: Sequence[str] | None = None) -> FeatureScaler:
        """Fit on rows ``start..end-1`` of ``values``.

        Args:
            values: Raw features, shape ``(T, F)``.
            start: First training row (use at least the features' warmup).
            end: One past the last training row.
            names: Column names; ``p_*`` columns are left unscaled. None: every column scaled.

        Raises:
            ValueError: An empty or out-of-range row span, names of the wrong length,
                non-finite values.
        """
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"values must be 2-D (rows, features), got shape {x.shape}")
        if not 0 <= start < end <= x.shape[0]:
            raise ValueError(f"need 0 <= start < end <= {x.shape[0]} rows, got start={start}, end={end}")
        cols = tuple(names) if names is not None else ()
        if names is not None and len(cols) != x.shape[1]:
            raise ValueError(f"names has {len(cols)} entries but values has {x.shape[1]} columns")
        rows = x[start:end]
        if not np.all(np.isfinite(rows)):
            raise ValueError("values must be finite over the fit rows")
        mean = rows.mean(axis=0)
        std = rows.std(axis=0)
        scale = np.where(std < _MIN_SCALE, 1.0, std)
        passthrough = np.array([name.startswith(REGIME_PREFIX) for name in cols], dtype=bool)
        if passthrough.any():
            mean[passthrough] = 0.0
            scale[passthrough] = 1.0
        return cls(names=cols, mean=mean, scale=scale)

    @property
    def n_features(self) -> int:
        """Number of columns the scaler expects."""
        return int(self.mean.shape[0])

    def transform(self, values: npt.ArrayLike) -> Float32Array:
        """Standardise and clip to ``[-CLIP, CLIP]``; float32, same shape as ``values``.

        Raises:
            ValueError: ``values`` does not have the fitted number of columns.
        """
        x = np.asarray(values, dtype=np.float64)
        if x.ndim not in (1, 2) or x.shape[-1] != self.n_features:
            raise ValueError(f"expected {self.n_features} feature columns, got shape {x.shape}")
        z = np.clip((x - self.mean) / self.scale, -CLIP, CLIP)
        return z.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; :meth:`from_dict` restores it exactly (floats round-trip via repr)."""
        return {
            "names": list(self.names),
            "mean": [float(v) for v in self.mean],
            "scale": [float(v) for v in self.scale],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureScaler:
        """Rebuild from :meth:`to_dict`'s output.

        Raises:
            ValueError: Missing keys, mismatched lengths, non-finite or non-positive scales.
        """
        try:
            names = tuple(str(v) for v in data["names"])
            mean = np.asarray(data["mean"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a scaler needs 'names', 'mean' and 'scale' lists: {exc}") from exc
        if mean.ndim != 1 or mean.shape != scale.shape or (names and len(names) != mean.shape[0]):
            raise ValueError("scaler 'names', 'mean' and 'scale' must have the same length")
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(scale)) and np.all(scale > 0.0)):
            raise ValueError("scaler 'mean' must be finite and 'scale' finite and positive")
        return cls(names=names, mean=mean, scale=scale)


def _invalid(message: str, field: str = "timestamps") -> InvalidInputError:
    loc = ["data", field] if field != "regime_probs" else ["regime_probs"]
    return InvalidInputError(message, details=[{"loc": loc, "msg": message}])


def _prices(close: npt.ArrayLike, high: npt.ArrayLike, low: npt.ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    c, h, lo = (np.asarray(x, dtype=np.float64) for x in (close, high, low))
    n = c.shape[0] if c.ndim == 1 else -1
    if n < 0 or h.shape != c.shape or lo.shape != c.shape:
        raise _invalid(f"data close, high and low must be 1-D of one length, got {c.shape}, {h.shape}, {lo.shape}")
    if n < WARMUP + 2:
        raise _invalid(f"data has {n} bars; the RL features need at least {WARMUP + 2} ({WARMUP} bars of warm-up)")
    for name, arr in (("close", c), ("high", h), ("low", lo)):
        bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0.0)))
        if bad.size:
            raise _invalid(f"data {name} must be positive and finite; row {int(bad[0])} is {arr[bad[0]]}", name)
    bad = np.flatnonzero(h < lo)
    if bad.size:
        raise _invalid(f"data row {int(bad[0])}: high {h[bad[0]]} is below low {lo[bad[0]]}", "high")
    return c, h, lo


def _rolling_sum(x: FloatArray, w: int, *, first: int) -> FloatArray:
    return window_sum(x, w, first=first)


def _rolling_mean(x: FloatArray, w: int, *, first: int) -> FloatArray:
    return _rolling_sum(x, w, first=first) / w


def _price_z(c: FloatArray, sma: FloatArray, w: int) -> FloatArray:
    """``(close - SMA) / std`` over the last ``w`` closes (two-pass variance), 0 when flat."""
    n = c.shape[0]
    first = w - 1
    var = np.zeros(n)
    for k in range(w):
        d = c[first - k : n - k] - sma[first:]
        var[first:] += d * d
    std = np.sqrt(var / w)
    z = np.zeros(n)
    ok = np.zeros(n, dtype=bool)
    ok[first:] = std[first:] > _FLAT_REL * sma[first:]
    np.divide(c - sma, std, out=z, where=ok)
    return z


def _rsi(c: FloatArray, w: int) -> FloatArray:
    n = c.shape[0]
    change = np.zeros(n)
    change[1:] = c[1:] - c[:-1]
    gains = _rolling_sum(np.maximum(change, 0.0), w, first=w)
    losses = _rolling_sum(np.maximum(-change, 0.0), w, first=w)
    total = gains + losses
    return np.divide(gains - losses, total, out=np.zeros(n), where=total > 0.0)


def _regime_block(regime_probs: npt.ArrayLike | None, regime_names: Sequence[str], n: int) -> FloatArray:
    if regime_probs is None:
        raise _invalid("regime_names were given without regime_probs", "regime_probs")
    probs = np.asarray(regime_probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != n or probs.shape[1] != len(regime_names):
        raise _invalid(
            f"regime_probs must have shape ({n}, {len(regime_names)}) (bars, regime_names), got {probs.shape}",
            "regime_probs",
        )
    if len(set(regime_names)) != len(regime_names):
        raise _invalid(f"regime_names must be unique, got {list(regime_names)}", "regime_probs")
    if not np.all(np.isfinite(probs)):
        raise _invalid("regime_probs must be finite", "regime_probs")
    return probs
