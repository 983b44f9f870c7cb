"""Per-bar losses of regime models, RL policies and execution networks for champion-against-challenger.

Every loss is computed for both versions on the same bars (``data``), lower is better; bars before
the first scored bar (``score_from``) are warm-up context only. Each family is scored by its own
model code:

* ``regime``: minus the one-step-ahead predictive log-likelihood of bar ``t``'s features,
  ``-log sum_j P(state_t = j | x_1..x_{t-1}) N(x_t; mean_j, cov_j)``: the filtered state
  probabilities of bar ``t - 1`` propagated by the transition matrix (the stationary distribution
  before the first feature row), then the Gaussian emission density of ``x_t``. Each detector
  computes its own features from the bars (its own volatility transform, floors and scaling), and
  the density is taken on the features' raw scale (the Jacobians of the transform and of the
  standardisation added back), so that two fits of one feature set compare whatever their
  transform. Both versions must use the same features (a density over other variables is not
  comparable) and be HMMs (the threshold-rules fallback has no density): else 422.
* ``rl``: minus the net return after costs of the policy's position, each policy walking the bars
  from its first usable bar (:func:`~quantcrew.ml_server.services.rl.evaluation.run_policy`, so
  the position it holds entering the scored span is its own); the position chosen at bar ``t``
  earns the return of bar ``t + 1`` less ``cost_bps + slippage_bps`` per unit of turnover
  (:func:`~quantcrew.ml_server.services.rl.backtest.backtest`). The last bar (no next bar) is not
  scored.
* ``execution``: minus the return of the sized position, ``signal_t * size_t * (close[t+1] /
  close[t] - 1)``, the size the mean of seeded MC-dropout draws, as the execution gate scores a
  network (no costs, timing not judged). A network sizes a strategic signal that another model
  makes, so it cannot be scored from bars alone: the request carries ``signals``, one for each of
  the last ``len(signals)`` bars of ``data`` (as ``POST /v1/execution/plan`` reads them), and
  both versions size the same signals; without them the comparison is refused (422 naming
  ``signals``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.schemas.execution import StrategicSignal
from quantcrew.ml_server.services.bars import Bars

if TYPE_CHECKING:
    from quantcrew.ml_server.services.regime.model import RegimeDetector

__all__ = ["Losses", "execution_losses", "first_scored", "invalid", "regime_losses", "rl_losses"]

FloatArray = npt.NDArray[np.float64]
Losses = tuple[str, FloatArray, FloatArray, tuple[str | None, str | None]]
"""The loss in words, the champion's and the challenger's per-bar losses, the first and last bar scored."""

FIELDS = ("champion_id", "challenger_id")
EXECUTION_DRAWS = 30  # MC-dropout draws per bar, as the execution gate sizes a network
EXECUTION_SEED = 0  # one seed for both versions: the same dropout stream, the difference is the weights
_SIGNAL = {"down": -1.0, "flat": 0.0, "up": 1.0}


def first_scored(data: OHLCVPayload, score_from: datetime | None) -> int:
    """Index of the first bar at or after ``score_from`` (0 without one; ``len`` when none is)."""
    if score_from is None:
        return 0
    return next((i for i, t in enumerate(data.timestamps) if _comparable(t, score_from) >= score_from),
                len(data.timestamps))


def _comparable(t: datetime, like: datetime) -> datetime:
    """``t`` comparable with ``like``: an offset-naive time is taken as UTC beside an aware one, and back."""
    if (t.tzinfo is None) == (like.tzinfo is None):
        return t
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC).replace(tzinfo=None)


def _span(bars: Bars, rows: Sequence[int] | npt.NDArray[np.int64]) -> tuple[str | None, str | None]:
    if len(rows) == 0:
        return None, None
    iso = bars.iso()
    return iso[int(rows[0])], iso[int(rows[-1])]


def invalid(message: str, field: str) -> InvalidInputError:
    """A 422 naming ``field``."""
    return InvalidInputError(message, details=[{"loc": [field], "msg": message}])


# -- regime models -----------------------------------------------------------------------------------


def regime_losses(registry: ModelRegistry, ids: tuple[str, str], bars: Bars, first: int) -> Losses:
    """Minus each detector's one-step-ahead predictive log-likelihood of every scored bar's features.

    Raises:
        InvalidInputError: a detector on the threshold-rules fallback, or versions of other features.
    """
    from quantcrew.ml_server.services.adapter import rebuild
    from quantcrew.ml_server.services.regime.model import RegimeDetector

    detectors = [rebuild(registry, model_id, RegimeDetector)[0] for model_id in ids]
    for det, model_id, field in zip(detectors, ids, FIELDS, strict=True):
        if det.hmm_ is None:
            raise invalid(f"regime model '{model_id}' is the threshold-rules fallback: it has no emission density "
                          "to score bars with", field)
    if tuple(detectors[0].features_) != tuple(detectors[1].features_):
        raise invalid(f"the champion models features {list(detectors[0].features_)} but the challenger "
                      f"{list(detectors[1].features_)}: their likelihoods are not comparable", "challenger_id")
    rows = np.arange(max(first, 1), len(bars), dtype=np.int64)  # bar 0 has no features
    a, b = (predictive_loss(det, bars)[rows - 1] for det in detectors)
    return "negative one-step-ahead predictive log-likelihood of the bar's features", a, b, _span(bars, rows)


def predictive_loss(detector: RegimeDetector, bars: Bars) -> FloatArray:
    """``-log p(x_t | x_1..x_{t-1})`` of bars ``1..T-1`` under a fitted HMM detector, on the features' raw scale."""
    from quantcrew.ml_server.services.regime.features import VOL_FEATURES, build_features
    from quantcrew.ml_server.services.regime.filter import (
        forward_filter,
        gaussian_log_likelihood,
        stationary_distribution,
    )

    assert detector.hmm_ is not None
    matrix, _ = build_features(bars, detector.features_, vol_window=detector.vol_window,
                               vol_transform=detector.vol_transform_, floors=detector.feature_floors_)
    y = matrix.values
    scale = detector.feature_scale_
    z = (y - detector.feature_mean_) / scale
    log_lik = gaussian_log_likelihood(z, np.asarray(detector.hmm_.means_, dtype=np.float64),
                                      np.asarray(detector.hmm_.covars_, dtype=np.float64))
    transmat = detector.transmat
    prior = stationary_distribution(transmat)
    filtered, _ = forward_filter(log_lik, transmat, prior)
    predicted = np.vstack([prior[None, :], filtered[:-1] @ transmat])  # P(state_t | x_1..x_{t-1})
    with np.errstate(divide="ignore"):
        joint = np.log(np.maximum(predicted, 0.0)) + log_lik
    top = joint.max(axis=1, keepdims=True)
    log_density = (top + np.log(np.exp(joint - top).sum(axis=1, keepdims=True)))[:, 0]
    # back to the raw features: the standardisation, then the volatility transform's Jacobian per row
    log_density -= float(np.log(scale).sum())
    for j, name in enumerate(detector.features_):
        if name in VOL_FEATURES:
            log_density += -y[:, j] if detector.vol_transform_ == "log" else -math.log(2.0) - np.log(y[:, j])
    out: FloatArray = -log_density
    return out


# -- RL policies -------------------------------------------------------------------------------------


def rl_losses(registry: ModelRegistry, ids: tuple[str, str], bars: Bars, first: int, *, cost_bps: float,
              slippage_bps: float) -> Losses:
    """Minus each policy's net return after costs at every scored bar that has a next bar.

    Raises:
        InvalidInputError: too few bars for the policies' features.
    """
    from quantcrew.ml_server.services.rl.backtest import backtest
    from quantcrew.ml_server.services.rl.evaluation import run_policy
    from quantcrew.ml_server.services.rl.features import WARMUP
    from quantcrew.ml_server.services.rl.market import Market
    from quantcrew.ml_server.services.rl.service import load_policy, policy_market

    n = len(bars)
    if n < WARMUP + 2:
        raise invalid(f"data has {n} bars; policies observe {WARMUP}-bar features, so at least {WARMUP + 2} are "
                      "needed", "data")
    cache: dict[tuple[str | None, str], Market] = {}
    end = n - 1  # the last bar's position earns nothing here
    walks: list[tuple[int, FloatArray, Market]] = []
    for model_id in ids:
        policy, info = load_policy(registry, model_id)
        market = policy_market(registry, bars, info.metadata, cache)
        begin = max(market.warmup, WARMUP)
        walks.append((begin, run_policy(policy, market, begin, end), market))
    start = max(first, *(begin for begin, _, _ in walks))
    losses: list[FloatArray] = []
    for begin, path, market in walks:
        if start >= end:
            losses.append(np.zeros(0))
            continue
        held = float(path[start - begin - 1]) if start > begin else 0.0
        _, net = backtest(path[start - begin:], market.forward_returns[start:end], cost_bps=cost_bps,
                          slippage_bps=slippage_bps, initial_position=held)
        losses.append(-net)
    rows = np.arange(start, end, dtype=np.int64)
    return "negative net return after costs of the policy's position", losses[0], losses[1], _span(bars, rows)


# -- execution networks ------------------------------------------------------------------------------


def execution_losses(registry: ModelRegistry, ids: tuple[str, str], bars: Bars, first: int,
                     signals: Sequence[StrategicSignal] | None, device: str) -> Losses:
    """Minus the return of each network's sized position at every scored signalled bar that has a next bar.

    Raises:
        InvalidInputError: no ``signals``, too little history before them, market inputs too large.
    """
    from quantcrew.ml_server.services.execution import inputs as xin
    from quantcrew.ml_server.services.execution.rule import next_bar_returns
    from quantcrew.ml_server.services.execution.service import load

    if signals is None:
        raise invalid("an execution comparison needs `signals`: the strategic signal at each of the last "
                      "len(signals) bars of `data` (a network sizes a signal another model makes)", "signals")
    n, k = len(bars), len(signals)
    if n - k < xin.MARKET_WARMUP:
        raise invalid(f"data has {n} bars; market conditions need {xin.MARKET_WARMUP} bars of history before the "
                      f"first of the {k} signals, so at least {xin.MARKET_WARMUP + k} are needed", "data")
    strategic = np.array([[_SIGNAL[s.signal], s.confidence, s.predictive_entropy, s.divergence_metric,
                           s.agreement_score] for s in signals], dtype=np.float64)
    keep = np.arange(n - k, n) >= first
    keep[-1] = False  # the last bar has no next bar
    rows = np.arange(n - k, n, dtype=np.int64)[keep]
    market = xin.market_inputs(bars.open, bars.high, bars.low, bars.close, bars.volume)[rows]
    x = np.column_stack([strategic[keep], market])
    ret = next_bar_returns(bars.close, rows)
    losses: list[FloatArray] = []
    for model_id, field in zip(ids, FIELDS, strict=True):
        model, _ = load(registry, model_id, device)
        if len(rows) == 0:
            losses.append(np.zeros(0))
            continue
        scaled = model.transform(x)
        if not np.isfinite(scaled).all():
            raise invalid(f"the market conditions of these bars overflow the inputs of network '{model_id}'", field)
        size = np.asarray(model.sample(scaled, EXECUTION_DRAWS, EXECUTION_SEED).size, dtype=np.float64).mean(axis=0)
        losses.append(-(x[:, 0] * size * ret))
    return "negative return of the sized position", losses[0], losses[1], _span(bars, rows)
