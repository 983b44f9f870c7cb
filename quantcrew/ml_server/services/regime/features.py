"""Per-bar features of the regime HMM, built on the server from OHLCV bars.

Every feature of bar ``t`` uses bars ``<= t`` only (causal), so a filtered label never sees
the future. Bar 0 has no return and gets no row: row ``i`` is bar ``i + 1``.

* ``log_return``: ``100 * log(close_t / close_{t-1})``, the daily log return in percent
  (in percent because hmmlearn's covariance floor and priors would swamp daily variances).
* ``realized_vol``: ``100 * sqrt(mean(r^2))`` over the last ``vol_window`` returns ending at
  ``t`` (fewer at the start of the series), variance-stabilised by the vol transform.
* ``range``: ``100 * log(high_t / low_t)``, the intraday range in percent (Parkinson's
  volatility proxy, about 5x as efficient as one squared return), variance-stabilised by
  the vol transform.

The two volatility features enter the HMM through a variance-stabilising transform, ``log``
or ``sqrt``, chosen at fit time by likelihood (see :mod:`quantcrew.ml_server.services.regime.service`):
real daily ranges mix volatility within a regime and are close to log-normal (Alizadeh,
Brandt & Diebold, 2002), while the range of a constant-volatility Brownian day is close to
Gaussian after a square root. Zeros (``high == low``, flat runs) are floored for ``log``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.services.bars import Bars

__all__ = [
    "VOL_FEATURES",
    "VOL_TRANSFORMS",
    "FeatureMatrix",
    "FeatureSource",
    "build_features",
    "usable_features",
    "vol_floor",
]

FloatArray = npt.NDArray[np.float64]

VOL_FEATURES: frozenset[str] = frozenset({"realized_vol", "range"})
VOL_TRANSFORMS: tuple[str, ...] = ("log", "sqrt")
_FLOOR_QUANTILE = 0.01  # log floor: 1st percentile of the positive values seen at fit
_MIN_FLOOR = 1e-6  # percent; used when a column has no positive value at all
DEGENERATE_STD = 1e-9  # a feature varying less than this over the fit bars carries nothing
_MAX_FLAT_SHARE = 0.10  # range is unusable when high == low on more bars than this


@dataclass(frozen=True)
class FeatureMatrix:
    """Features of bars ``1..T-1`` and what the likelihood needs to compare transforms.

    Attributes:
        values: Transformed features, shape ``(T - 1, len(names))``.
        names: Feature names, in column order.
        returns: Daily log returns (decimal, not percent), shape ``(T - 1,)``.
        log_jacobian: ``sum_t log |d transform / d raw|`` per column, so that likelihoods of
            models fitted under different transforms can be compared on the raw scale.
    """

    values: FloatArray
    names: tuple[str, ...]
    returns: FloatArray
    log_jacobian: FloatArray


class FeatureSource:
    """The features of one set of bars, each computed once however often a fit asks for them.

    A fit reads its bars several times: to drop uninformative features, once per volatility
    transform it compares, to describe its states and to label the bars. The raw columns and the
    log floors are computed here once, and each transformed column once per transform and floor.

    Args:
        bars: At least two bars.
        names: Every feature a caller will ask for (``log_return``, the stand-in of a fit whose
            features carry nothing, is always there).
        vol_window: Trailing window of ``realized_vol``, in returns.

    Attributes:
        bars: The bars.
        returns: Daily log returns (decimal), shape ``(T - 1,)``.
        floors: Log floor of each volatility column, learned from these bars (see :func:`vol_floor`).
    """

    def __init__(self, bars: Bars, names: Sequence[str], *, vol_window: int) -> None:
        returns = np.diff(np.log(bars.close))
        pct = 100.0 * returns
        raw: dict[str, FloatArray] = {"log_return": pct}
        if "realized_vol" in names:
            csum = np.concatenate([[0.0], np.cumsum(pct**2)])
            end = np.arange(1, pct.shape[0] + 1)
            begin = np.maximum(end - vol_window, 0)
            raw["realized_vol"] = np.sqrt(np.maximum(csum[end] - csum[begin], 0.0) / (end - begin))
        if "range" in names:
            raw["range"] = 100.0 * np.log(bars.high[1:] / bars.low[1:])
        self.bars = bars
        self.returns = returns
        self.floors = {name: vol_floor(x) for name, x in raw.items() if name in VOL_FEATURES}
        self._raw = raw
        self._columns: dict[tuple[str, str, float], tuple[FloatArray, float]] = {}

    def matrix(
        self, names: Sequence[str], *, vol_transform: str, floors: dict[str, float] | None = None,
    ) -> tuple[FeatureMatrix, dict[str, float]]:
        """The features ``names`` of every bar but the first, under ``vol_transform``.

        Args:
            names: Features, in column order (each given to the constructor).
            vol_transform: ``"log"`` or ``"sqrt"``, applied to the volatility features.
            floors: Floors of the log transform learned at fit; None uses these bars' own.

        Returns:
            The feature matrix and the floors used (to store at fit and reuse at predict).
        """
        if vol_transform not in VOL_TRANSFORMS:
            raise ValueError(f"vol_transform must be one of {VOL_TRANSFORMS}, got {vol_transform!r}")
        used_floors = dict(floors or {})
        columns: list[FloatArray] = []
        jacobian: list[float] = []
        for name in names:
            x = self._raw[name]
            if name not in VOL_FEATURES:
                columns.append(x)
                jacobian.append(0.0)
                continue
            floor = used_floors.setdefault(name, self.floors[name])
            key = (name, vol_transform, floor)
            if key not in self._columns:
                x = np.maximum(x, floor)
                if vol_transform == "log":
                    logged = np.log(x)
                    self._columns[key] = (logged, float(-logged.sum()))
                else:
                    self._columns[key] = (np.sqrt(x), float((-np.log(2.0) - 0.5 * np.log(x)).sum()))
            column, jac = self._columns[key]
            columns.append(column)
            jacobian.append(jac)
        values = np.column_stack(columns) if columns else np.empty((self.returns.shape[0], 0))
        return FeatureMatrix(values, tuple(names), self.returns, np.asarray(jacobian)), used_floors


def vol_floor(raw: FloatArray) -> float:
    """Floor of a volatility column before ``log``: the 1st percentile of its positive values.

    A zero (``high == low``, a flat run) then reads as a very calm bar, not as an outlier
    ``log(0)`` that would get a hidden state of its own.
    """
    positive = raw[raw > 0]
    return max(float(np.quantile(positive, _FLOOR_QUANTILE)), _MIN_FLOOR) if positive.size else _MIN_FLOOR


def build_features(
    bars: Bars,
    names: Sequence[str],
    *,
    vol_window: int,
    vol_transform: str,
    floors: dict[str, float] | None = None,
) -> tuple[FeatureMatrix, dict[str, float]]:
    """Compute the selected features of every bar but the first.

    Args:
        bars: At least two bars.
        names: Selected features (any of ``log_return``, ``realized_vol``, ``range``).
        vol_window: Trailing window of ``realized_vol``, in returns.
        vol_transform: ``"log"`` or ``"sqrt"``, applied to the volatility features.
        floors: Floors of the log transform learned at fit; None learns them from ``bars``.

    Returns:
        The feature matrix and the floors used (to store at fit and reuse at predict).
    """
    return FeatureSource(bars, names, vol_window=vol_window).matrix(names, vol_transform=vol_transform,
                                                                     floors=floors)


def usable_features(source: FeatureSource, names: Sequence[str]) -> tuple[tuple[str, ...], list[str]]:
    """The selected features that carry information, and a note per change to the selection.

    A feature is dropped when it is constant over the fit bars; ``range`` also when more than
    10 % of the bars have ``high == low`` (close-only or stale data). When nothing is left but
    prices move, ``log_return`` stands in, so close-only data still get an HMM.
    """
    bars = source.bars
    raw, _ = source.matrix(names, vol_transform="log")
    used: list[str] = []
    notes: list[str] = []
    for i, name in enumerate(names):
        if float(np.std(raw.values[:, i])) <= DEGENERATE_STD:
            notes.append(f"feature '{name}' is constant over the fit bars and was dropped")
        elif name == "range" and float(np.mean(bars.high[1:] <= bars.low[1:])) > _MAX_FLAT_SHARE:
            notes.append("feature 'range' was dropped: high == low on more than 10% of the bars")
        else:
            used.append(name)
    if not used:
        if float(np.std(source.returns)) > DEGENERATE_STD and "log_return" not in names:
            used.append("log_return")
            notes.append("fitted on 'log_return' instead")
        else:
            notes.append("prices are constant: no feature varies, so no HMM can be fitted")
    return tuple(used), notes
