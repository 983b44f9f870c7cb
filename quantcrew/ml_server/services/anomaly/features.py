"""Per-bar features of the anomaly detector, each from the bar itself and earlier bars only.

* ``log_return``: ``log(close_t / close_{t-1})``; bar 0 has none.
* ``abs_return``: ``|log_return|``; bar 0 has none.
* ``range``: ``log(high_t / low_t)``; every bar has one.
* ``gap``: ``log(open_t / close_{t-1})``; bar 0 has none.
* ``volume_z``: ``(volume_t - mean) / std`` over the ``window`` PREVIOUS volumes
  ``t - window .. t - 1`` (sample standard deviation); the bar itself is left out of its own
  reference so that a spike is measured against the calm before it, and the first ``window``
  bars have none. Where the reference window is constant (zero spread) the score is 0 for an
  equal volume and +-``Z_CAP`` otherwise; every value is clipped to ``[-Z_CAP, Z_CAP]``.

The bars without every selected feature (the warm-up: 1 bar for the return features,
``window`` bars for ``volume_z``, none for ``range`` alone) are dropped, so no NaN reaches the
model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.anomaly import ANOMALY_FEATURES
from quantcrew.ml_server.services.bars import Bars

__all__ = ["Z_CAP", "AnomalyFeatures", "build_features", "resolve_features", "warmup_bars"]

FloatArray = npt.NDArray[np.float64]

Z_CAP = 1.0e6
"""Bound on ``|volume_z|`` (reached only when the reference window is constant)."""


@dataclass(frozen=True)
class AnomalyFeatures:
    """The feature table of the scored bars.

    Attributes:
        names: Feature names, in column order.
        values: ``(len(bars) - n_warmup, len(names))`` finite floats.
        n_warmup: Bars dropped at the start for lack of a feature value.
    """

    names: tuple[str, ...]
    values: FloatArray
    n_warmup: int


def resolve_features(requested: Sequence[str] | None, *, has_volume: bool) -> tuple[str, ...]:
    """The features to use: the requested ones, or every available one when None.

    Raises:
        InvalidInputError: ``volume_z`` requested but the bars carry no volume.
    """
    if requested is None:
        return tuple(f for f in ANOMALY_FEATURES if has_volume or f != "volume_z")
    unknown = [f for f in requested if f not in ANOMALY_FEATURES]
    if unknown or not requested or len(set(requested)) != len(requested):
        raise ValueError(f"features must be distinct names from {ANOMALY_FEATURES}, got {list(requested)}")
    if "volume_z" in requested and not has_volume:
        raise InvalidInputError(
            "features includes 'volume_z' but data.volume was not sent: send the volume column or drop 'volume_z'",
            details=[{"loc": ["data", "volume"], "msg": "required by the 'volume_z' feature"}],
        )
    return tuple(requested)


def warmup_bars(names: Sequence[str], window: int) -> int:
    """Bars at the start without every feature value in ``names``."""
    need = {"log_return": 1, "abs_return": 1, "gap": 1, "range": 0, "volume_z": window}
    return max(need[name] for name in names)


def build_features(bars: Bars, names: Sequence[str], *, window: int) -> AnomalyFeatures:
    """The feature table of the bars after the warm-up (see the module docstring).

    Raises:
        InvalidInputError: no bar is left after the warm-up, or ``volume_z`` without volume.
    """
    n_warmup = warmup_bars(names, window)
    n = len(bars)
    if n <= n_warmup:
        raise InvalidInputError(
            f"data has {n} bars; the features {list(names)} need {n_warmup} warm-up bars, so at least "
            f"{n_warmup + 1} bars are needed to score one",
            details=[{"loc": ["data", "timestamps"], "msg": f"need at least {n_warmup + 1} rows"}],
        )
    columns = [_feature(bars, name, window)[n_warmup:] for name in names]
    return AnomalyFeatures(tuple(names), np.column_stack(columns).astype(np.float64), n_warmup)


def _feature(bars: Bars, name: str, window: int) -> FloatArray:
    """The full-length column of one feature, NaN where the bar has no value."""
    out = np.full(len(bars), np.nan)
    if name in ("log_return", "abs_return"):
        ret = np.diff(np.log(bars.close))
        out[1:] = np.abs(ret) if name == "abs_return" else ret
    elif name == "gap":
        out[1:] = np.log(bars.open[1:] / bars.close[:-1])
    elif name == "range":
        out[:] = np.log(bars.high / bars.low)
    elif name == "volume_z":
        if bars.volume is None:
            raise InvalidInputError(
                "the 'volume_z' feature needs data.volume",
                details=[{"loc": ["data", "volume"], "msg": "required by the 'volume_z' feature"}],
            )
        out[window:] = _trailing_z(bars.volume, window)
    else:
        raise ValueError(f"unknown anomaly feature {name!r}; valid: {ANOMALY_FEATURES}")
    return out


def _trailing_z(volume: FloatArray, window: int) -> FloatArray:
    """z-score of ``volume[t]`` against ``volume[t - window : t]`` for ``t = window .. n - 1``.

    Each window is first divided by its own largest magnitude (a z-score does not change under
    scaling), so huge volumes cannot overflow the variance and no bar's value depends on a later bar.
    """
    past = sliding_window_view(volume, window)[:-1]  # row i = volume[i : i + window], the bars before i + window
    scale = np.abs(past).max(axis=1)
    scale = np.where(scale > 0.0, scale, 1.0)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ref = past / scale[:, None]
        current = volume[window:] / scale
        mean = ref.mean(axis=1)
        std = ref.std(axis=1, ddof=1)
        diff = current - mean
        tiny = 1e-12  # relative to the window's largest volume: below it the window is constant, to rounding
        z = np.where(std > tiny, diff / np.where(std > tiny, std, 1.0), np.sign(diff) * Z_CAP * (np.abs(diff) > tiny))
    return np.asarray(np.clip(z, -Z_CAP, Z_CAP), dtype=np.float64)
