"""The regime family's wire reply: a fitted detector's filtering of some bars, with its provenance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.schemas.regime import RegimeLabel, RegimeLabelResponse, RegimeStateInfo, RegimeTrendInfo
from quantcrew.ml_server.services.bars import Bars
from quantcrew.ml_server.services.matrix import finite_list, finite_rows
from quantcrew.ml_server.services.regime.trend import BEAR_DRAWDOWN, DRIFT_DAYS, HIGH_DAYS, TrendReading

__all__ = ["FittedRegimes", "RegimeFiltering", "regime_reply", "trend_info"]

FloatArray = npt.NDArray[np.float64]

_MAX_DURATION = 1e12


@dataclass(frozen=True)
class RegimeFiltering:
    """Filtered regimes of bars ``1..T-1`` (bar 0 has no return).

    Attributes:
        state_probs: ``P(state_t | bars <= t)``, shape ``(T - 1, K)``.
        label_probs: Per label, the summed probability of its states, shape ``(T - 1,)`` each.
        states: Filtered MAP state of each bar.
        labels: Label with the highest probability for each bar.
        timestamps: ISO time of each labelled bar.
        trend: The trend reading of each bar (drawdown, trailing return, bear trend).
        trend_applied: Whether the labels weigh the trend (the calm labels' probability moved to
            ``bear`` on the bars of a bear trend), or are the filter's alone.
        filter_labels: The filter's label of each bar before the trend reading (``labels`` when
            the reading is off).
    """

    state_probs: FloatArray
    label_probs: dict[RegimeLabel, FloatArray]
    states: npt.NDArray[np.int64]
    labels: list[RegimeLabel]
    timestamps: list[str]
    trend: TrendReading
    trend_applied: bool
    filter_labels: list[RegimeLabel]


class FittedRegimes(Protocol):
    """What a reply reads of a fitted detector (:class:`~quantcrew.ml_server.services.regime.model.RegimeDetector`)."""

    seed: int
    n_states_: int
    state_labels_: list[RegimeLabel]
    state_mean_return_: FloatArray
    state_volatility_: FloatArray
    method_used_: str
    fallback_: bool
    fallback_reason_: str | None
    converged_: bool
    log_likelihood_: float
    bic_: dict[int, float]

    @property
    def transmat(self) -> FloatArray: ...



def regime_reply(
    detector: FittedRegimes, bars: Bars, result: RegimeFiltering, *, model_id: str | None,
    model_version: int | None, include_probabilities: bool,
) -> RegimeLabelResponse:
    """The reply labelling ``bars`` (every float finite).

    Args:
        detector: The fitted detector.
        bars: The labelled bars.
        result: ``detector``'s filtering of ``bars``.
        model_id: Registry id of a stored model, None for a stateless answer.
        model_version: Its version.
        include_probabilities: Whether to include the per-bar probability arrays.
    """
    transmat = detector.transmat
    n_states = detector.n_states_
    occupancy = np.bincount(result.states, minlength=n_states) / max(len(result.states), 1)
    diag = np.clip(np.diag(transmat), 0.0, 1.0)
    durations = np.minimum(1.0 / np.maximum(1.0 - diag, 1.0 / _MAX_DURATION), _MAX_DURATION)
    info = [
        RegimeStateInfo(
            state=i,
            label=detector.state_labels_[i],
            mean_return=float(detector.state_mean_return_[i]),
            volatility=float(detector.state_volatility_[i]),
            expected_duration=float(durations[i]),
            occupancy=float(occupancy[i]),
        )
        for i in range(n_states)
    ]
    last = result.labels[-1]
    return RegimeLabelResponse(
        model_id=model_id,
        model_version=model_version,
        method_used=detector.method_used_,
        fallback=detector.fallback_,
        fallback_reason=detector.fallback_reason_,
        data_hash=bars.data_hash,
        seed=detector.seed,
        as_of=bars.as_of,
        n_states=n_states,
        timestamps=result.timestamps,
        labels=result.labels,
        states=[int(s) for s in result.states],
        label_probabilities=(
            {k: finite_list(v) for k, v in result.label_probs.items()} if include_probabilities else None
        ),
        state_probabilities=finite_rows(result.state_probs) if include_probabilities else None,
        state_info=info,
        transition_matrix=finite_rows(transmat),
        current_label=last,
        current_probability=float(result.label_probs[last][-1]),
        converged=detector.converged_,
        log_likelihood=float(detector.log_likelihood_) if np.isfinite(detector.log_likelihood_) else 0.0,
        bic=dict(detector.bic_),
        trend=trend_info(result),
    )


def trend_info(result: RegimeFiltering) -> RegimeTrendInfo:
    """The trend reading of the last bar, and how many bars it read as a bear market."""
    trend = result.trend
    trailing = float(trend.trailing_return[-1])
    return RegimeTrendInfo(
        applied=result.trend_applied,
        calm_drawdown=float(trend.drawdown[-1]),
        calm_trailing_return=trailing if np.isfinite(trailing) else None,
        price_drawdown=float(trend.price_drawdown[-1]),
        bear_trend=bool(trend.bear[-1]),
        bear_trend_bars=int(trend.bear.sum()),
        high_days=HIGH_DAYS,
        drift_days=DRIFT_DAYS,
        bear_drawdown=BEAR_DRAWDOWN,
    )
