"""Markets prepared for policies: one instrument's bars turned into what a policy observes.

A :class:`Market` holds engineered features (each row uses bars up to its own only), the regime
family's FILTERED label probabilities (the HMM is fitted on the training bars only), a scaler
fitted on the training rows, and the forward return each position earns. Training and
inference build observations through the same :func:`observation` so they cannot drift apart.

Time convention: the position chosen at bar ``t`` (seeing bars ``<= t``) earns
``close[t+1] / close[t] - 1``. Training steps stop one bar short of the first test bar, so
no training reward is paid from a test-span price.

A training span is split once more (:func:`validation_index`): its first part fits the policies
(and the scaler and regime model they observe through), its last part, the validation bars,
only chooses among them; the test span after it judges the one chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from quantcrew.data.frequency import periods_per_year as count_periods
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.regime import REGIME_LABELS
from quantcrew.ml_server.services.bars import Bars
from quantcrew.ml_server.services.regime.model import RegimeDetector
from quantcrew.ml_server.services.rl.features import WARMUP, FeatureScaler, build_features

__all__ = [
    "MIN_TEST_BARS",
    "MIN_TRAIN_BARS",
    "MIN_VALIDATION_BARS",
    "UNKNOWN_REGIME",
    "bars_per_year",
    "Market",
    "as_naive_utc",
    "observation",
    "prepare_market",
    "split_index",
    "validation_index",
]

FloatArray = npt.NDArray[np.float64]

MIN_TRAIN_BARS = 100  # training steps after the feature warm-up
MIN_TEST_BARS = 20
MIN_VALIDATION_BARS = 20  # bars whose positions the validation judges
UNKNOWN_REGIME = "unknown"


@dataclass(frozen=True)
class Market:
    """One instrument's bars, ready for policies.

    Attributes:
        bars: The bars.
        scaled: Scaled features, float32, shape ``(T, F)``; rows before ``warmup`` unused.
        forward_returns: ``close[t+1] / close[t] - 1`` (0 at the last bar).
        price_z: Deviation of the close from its 20-bar mean, in standard deviations.
        feature_names: Column names of ``scaled``.
        scaler: Fitted on the training rows.
        labels: Filtered regime label of each bar (``"unknown"`` for bar 0 or without regimes).
        regime_probs: Filtered label probabilities of the last bar, or None without regimes.
        warmup: First usable row.
        periods_per_year: Bars per year counted from the bars' own calendar
            (:func:`quantcrew.data.frequency.periods_per_year`); None when the spacing has no
            meaning per year (annualising then refuses the bars).
    """

    bars: Bars
    scaled: npt.NDArray[np.float32]
    forward_returns: FloatArray
    price_z: FloatArray
    feature_names: tuple[str, ...]
    scaler: FeatureScaler
    labels: list[str]
    regime_probs: dict[str, float] | None
    warmup: int
    periods_per_year: int | None = None


def split_index(bars: Bars, train_end: datetime | None, train_fraction: float) -> int:
    """Index of the last training bar.

    Raises:
        InvalidInputError: ``train_end`` leaves too few training or test bars.
    """
    n = len(bars)
    if train_end is None:
        last = int(n * train_fraction) - 1
    else:
        stamp = as_naive_utc(train_end)
        last = int(np.searchsorted(bars.times, stamp, side="right")) - 1
    need_train = WARMUP + MIN_TRAIN_BARS
    if last + 1 < need_train:
        raise InvalidInputError(
            f"train_end leaves {max(last + 1, 0)} training bars; the {WARMUP}-bar feature window plus "
            f"{MIN_TRAIN_BARS} training steps need at least {need_train}",
            details=[{"loc": ["train_end"], "msg": f"need at least {need_train} bars up to train_end"}],
        )
    if n - 1 - last < MIN_TEST_BARS:
        raise InvalidInputError(
            f"train_end leaves {n - 1 - last} test bars after it; the out-of-sample evaluation needs at least "
            f"{MIN_TEST_BARS}",
            details=[{"loc": ["train_end"], "msg": f"need at least {MIN_TEST_BARS} bars after train_end"}],
        )
    return last


def validation_index(train_last: int, validation_fraction: float) -> int:
    """Index of the last bar that fits the policies: the training steps ``WARMUP..train_last-1``
    split so that the last ``validation_fraction`` of them (rounded up) are the validation bars.

    The policies train on steps ``WARMUP..fit_last-1`` (their last reward is paid by the close of
    ``fit_last``); the validation judges the positions chosen at ``fit_last..train_last-1``.

    Raises:
        InvalidInputError: too few fitting steps or validation bars (naming ``validation_fraction``).
    """
    steps = train_last - WARMUP
    validation = int(np.ceil(steps * validation_fraction))
    fit_last = train_last - validation
    if validation < MIN_VALIDATION_BARS or fit_last - WARMUP < MIN_TRAIN_BARS:
        need = WARMUP + MIN_TRAIN_BARS + MIN_VALIDATION_BARS
        raise InvalidInputError(
            f"validation_fraction {validation_fraction:g} of {max(steps, 0)} training steps leaves "
            f"{max(fit_last - WARMUP, 0)} to fit on and {validation} to validate on; at least {MIN_TRAIN_BARS} and "
            f"{MIN_VALIDATION_BARS} are needed (send at least {need + 1} bars up to train_end, or change the "
            "fraction)",
            details=[{"loc": ["validation_fraction"],
                      "msg": f"need {MIN_TRAIN_BARS} fitting steps and {MIN_VALIDATION_BARS} validation bars"}],
        )
    return fit_last


def bars_per_year(times: npt.ArrayLike) -> int | None:
    """Bars per year of these timestamps' calendar, or None when their spacing has no meaning per year."""
    try:
        return count_periods(times)
    except ValueError:
        return None


def _regimes(detector: RegimeDetector | None,
             bars: Bars) -> tuple[FloatArray | None, list[str], dict[str, float] | None]:
    if detector is None:
        return None, [UNKNOWN_REGIME] * len(bars), None
    filtered = detector.filter(bars)
    probs = np.full((len(bars), len(REGIME_LABELS)), 1.0 / len(REGIME_LABELS))
    for j, label in enumerate(REGIME_LABELS):
        probs[1:, j] = filtered.label_probs[label]
    labels = [UNKNOWN_REGIME, *(str(x) for x in filtered.labels)]
    last: dict[str, float] = {label: float(probs[-1, j]) for j, label in enumerate(REGIME_LABELS)}
    return probs, labels, last


def prepare_market(bars: Bars, *, detector: RegimeDetector | None, scaler: FeatureScaler | None = None,
                   train_last: int | None = None) -> Market:
    """Features, regimes and scaling of ``bars``.

    Args:
        bars: The bars.
        detector: A fitted regime detector (its probabilities become features), or None.
        scaler: A stored scaler; None fits one on rows ``warmup..train_last``.
        train_last: Last training bar, needed when ``scaler`` is None.
    """
    probs, labels, last = _regimes(detector, bars)
    feats = build_features(bars.close, bars.high, bars.low, regime_probs=probs,
                           regime_names=REGIME_LABELS if probs is not None else ())
    if scaler is None:
        if train_last is None:
            raise ValueError("train_last is needed to fit the scaler")
        scaler = FeatureScaler.fit(feats.values, feats.warmup, train_last + 1, names=feats.names)
    return Market(bars=bars, scaled=scaler.transform(feats.values), forward_returns=feats.forward_returns,
                  price_z=feats.price_z, feature_names=feats.names, scaler=scaler, labels=labels,
                  regime_probs=last, warmup=feats.warmup, periods_per_year=bars_per_year(bars.times))


def observation(market: Market, t: int, position: float) -> npt.NDArray[np.float32]:
    """What a policy sees at bar ``t``: the scaled features of ``t`` and the position held."""
    return np.append(market.scaled[t], np.float32(position)).astype(np.float32)


def as_naive_utc(stamp: datetime) -> np.datetime64:
    """``stamp`` as a naive UTC ``datetime64[us]`` (the bars' time axis)."""
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(stamp, "us")
