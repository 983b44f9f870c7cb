"""Market regimes from OHLCV bars: a Gaussian HMM, filtered (never smoothed), with semantic labels.

Features (causal: the row of bar ``t`` uses bars ``<= t``; bar 0 has no return and no label,
so every per-bar output has ``len(bars) - 1`` entries, for bars ``1..T-1``):

* ``log_return``: daily close-to-close log return, in percent.
* ``realized_vol``: RMS of the last ``vol_window`` percent returns (trailing), variance-stabilised.
* ``range``: ``100 * log(high / low)``, Parkinson's intraday range in percent, variance-stabilised.

Details in :mod:`quantcrew.ml_server.services.regime_features`. Features are standardised
with the mean and scale stored at fit (``feature_mean_``, ``feature_scale_``) and reused as is
on new bars.

Default features: ``("range",)``. Measured (``bench/regime_accuracy.py``), not assumed:

* ``range`` alone identifies volatility regimes best: 1.08-1.17x the accuracy of the
  returns-only oracle filter on every synthetic market (it sees the intraday range, the oracle
  does not), and sticky states (expected durations 13-58 days) on the S&P 500.
* adding ``log_return`` lets EM split days by their sign instead of by regime: within a
  regime, range and return are not jointly Gaussian (the range is at least the absolute
  intraday move), and on the S&P 500 the fit turns into "up day" / "down day" states with
  expected durations of 2-3 bars. The return still names the states (their drift) after the fit.
* ``realized_vol`` overlaps from bar to bar, which breaks the HMM's conditional independence:
  states lag switches and the fit degrades (all three features: 0.71-0.95x the oracle on the
  same markets, none of 15 at 0.95x).

A selected feature that carries no information (constant; ``range`` with ``high == low`` on
more than 10 % of the bars) is dropped; with nothing left, ``log_return`` stands in (close-only
data). Either change is reported with ``fallback=True`` and a ``fallback_reason``.

Model: hmmlearn ``GaussianHMM`` with FULL covariances: ``range`` and ``realized_vol`` measure
the same volatility and are strongly correlated within a state; a diagonal model would count
that evidence twice and make the filter over-confident. With ``d <= 3`` features a full matrix
costs ``d (d + 1) / 2 <= 6`` parameters per state, which BIC charges for (with one feature the
two types coincide). The number of states is given or chosen by BIC over
``min_states..max_states`` (``-2 log L + p log T``, ``p`` from
:func:`~quantcrew.ml_server.services.hmm_filter.n_parameters`), jointly with the volatility
transform (``log`` or ``sqrt``), whose likelihoods are made comparable on the raw scale by the
Jacobian. Each count is fitted from ``n_restarts`` starts (seeds ``seed, seed + 1, ...``); the
best converged log-likelihood wins (see :mod:`quantcrew.ml_server.services.regime_fit`).

Non-convergence policy: a fit that hit the iteration cap is still a valid HMM (EM never lowers
the likelihood), so when no restart converged the best one is used and reported with
``converged=False``, ``fallback=False``: the method is the one asked for, and the flag says how
far to trust it. When no HMM can be fitted at all (every restart raised, too few bars for two
states, constant prices), the detector falls back to deterministic threshold rules:
``method_used="threshold_rules"``, ``fallback=True``, ``fallback_reason`` saying what failed,
``converged=False``, ``log_likelihood=0.0``, empty ``bic``; it never raises for bars it could read.

Labels: each state is named from its return statistics by the volatility-first rule of
:mod:`quantcrew.ml_server.services.regime_labels`; ``label_probabilities`` sums the FILTERED
state probabilities per label (forward pass of :mod:`quantcrew.ml_server.services.hmm_filter`
from the stationary distribution), and each bar's label is their argmax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from hmmlearn.hmm import GaussianHMM

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.regime import (
    REGIME_FEATURES,
    REGIME_LABELS,
    RegimeFeature,
    RegimeLabel,
    RegimeLabelRequest,
    RegimeLabelResponse,
    RegimeStateInfo,
)
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.hmm_filter import forward_filter, gaussian_log_likelihood, stationary_distribution
from quantcrew.ml_server.services.matrix import finite_list, finite_rows
from quantcrew.ml_server.services.regime_features import VOL_FEATURES, VOL_TRANSFORMS, build_features, usable_features
from quantcrew.ml_server.services.regime_fit import is_usable, select_model
from quantcrew.ml_server.services.regime_labels import ThresholdRules, label_states, state_statistics

__all__ = ["DEFAULT_FEATURES", "METHOD_HMM", "METHOD_RULES", "RegimeDetector", "RegimeFiltering", "label_bars"]

FloatArray = npt.NDArray[np.float64]

DEFAULT_FEATURES: tuple[RegimeFeature, ...] = ("range",)
"""Features used when none are named: the intraday range alone (see the module docstring)."""
METHOD_HMM = "gaussian_hmm"
METHOD_RULES = "threshold_rules"
_METADATA_FORMAT = 1
_MIN_BARS = 3
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
    """

    state_probs: FloatArray
    label_probs: dict[RegimeLabel, FloatArray]
    states: npt.NDArray[np.int64]
    labels: list[RegimeLabel]
    timestamps: list[str]


class RegimeDetector:
    """Gaussian-HMM regime detector following scikit-learn's estimator contract.

    Args:
        n_states: Number of hidden states; None chooses it by BIC over ``min_states..max_states``.
        min_states: Smallest state count tried by BIC.
        max_states: Largest state count tried by BIC.
        features: Features the HMM sees (subset of ``log_return``, ``realized_vol``, ``range``).
        seed: Seed of the first restart; restart ``k`` uses ``seed + k``.
        n_restarts: Restarts per state count.
        vol_window: Trailing window of ``realized_vol``, in returns.
        vol_transform: ``"auto"`` (chosen by likelihood), ``"log"`` or ``"sqrt"``.
        covariance_type: hmmlearn covariance type (``"full"`` by default; see the module docstring).
        n_iter: EM iteration cap per restart.
        tol: EM convergence threshold on the log-likelihood gain per step.

    Attributes (learned by :meth:`fit`):
        hmm_: The fitted hmmlearn ``GaussianHMM``; None on the threshold-rules fallback.
        features_: Features actually used (see the module docstring for when they differ).
        vol_transform_: ``"log"`` or ``"sqrt"``.
        feature_floors_, feature_mean_, feature_scale_: Feature preparation stored at fit.
        n_states_: Number of states (4 label-states on fallback).
        state_labels_: Semantic label of each state.
        state_mean_return_, state_volatility_, state_weight_: Daily log-return mean and
            standard deviation of each state, and its effective number of fit bars.
        converged_, log_likelihood_, bic_: Fit diagnostics (``bic_`` per state count tried).
        method_used_, fallback_, fallback_reason_: Provenance of the answer.
        rules_, rules_transmat_: The fallback rules and their label transition matrix.
    """

    def __init__(
        self,
        *,
        n_states: int | None = None,
        min_states: int = 2,
        max_states: int = 4,
        features: Sequence[str] = DEFAULT_FEATURES,
        seed: int = 0,
        n_restarts: int = 4,
        vol_window: int = 5,
        vol_transform: str = "auto",
        covariance_type: str = "full",
        n_iter: int = 200,
        tol: float = 1e-2,
    ) -> None:
        self.n_states = n_states
        self.min_states = min_states
        self.max_states = max_states
        self.features = tuple(features)
        self.seed = seed
        self.n_restarts = n_restarts
        self.vol_window = vol_window
        self.vol_transform = vol_transform
        self.covariance_type = covariance_type
        self.n_iter = n_iter
        self.tol = tol

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able)."""
        return {
            "n_states": self.n_states,
            "min_states": self.min_states,
            "max_states": self.max_states,
            "features": list(self.features),
            "seed": self.seed,
            "n_restarts": self.n_restarts,
            "vol_window": self.vol_window,
            "vol_transform": self.vol_transform,
            "covariance_type": self.covariance_type,
            "n_iter": self.n_iter,
            "tol": self.tol,
        }

    # ------------------------------------------------------------------ fit
    def fit(self, bars: Bars) -> RegimeDetector:
        """Fit the HMM (or, when no HMM can be fitted, the threshold rules) on ``bars``.

        Raises:
            InvalidInputError: fewer than 3 bars.
            ValueError: an invalid configuration (unknown feature, bad state range).
        """
        self._check_config()
        if len(bars) < _MIN_BARS:
            raise InvalidInputError(
                f"data has {len(bars)} bars; the regime model needs at least {_MIN_BARS}",
                details=[{"loc": ["body", "data", "timestamps"], "msg": f"need at least {_MIN_BARS} rows"}],
            )
        self.hmm_: GaussianHMM | None = None
        self.rules_: ThresholdRules | None = None
        self.rules_transmat_: FloatArray | None = None
        self.bic_: dict[int, float] = {}
        self.converged_ = False
        self.log_likelihood_ = 0.0
        self.fallback_reason_: str | None = None

        returns = np.diff(np.log(bars.close))
        used, notes = usable_features(bars, self.features, vol_window=self.vol_window)
        if not used:
            return self._fit_rules(bars, returns, "; ".join(notes))
        transforms = (
            VOL_TRANSFORMS if self.vol_transform == "auto" and any(f in VOL_FEATURES for f in used)
            else ("log" if self.vol_transform == "auto" else self.vol_transform,)
        )
        counts = [self.n_states] if self.n_states is not None else list(range(self.min_states, self.max_states + 1))
        choice, failures = select_model(
            bars, used, transforms=transforms, counts=counts, vol_window=self.vol_window, seed=self.seed,
            n_restarts=self.n_restarts, covariance_type=self.covariance_type, n_iter=self.n_iter, tol=self.tol,
        )
        if choice is None:
            detail = "; ".join(failures[:3]) or "no state count is small enough for the number of bars"
            notes.append(f"no Gaussian HMM could be fitted ({detail})")
            return self._fit_rules(bars, returns, "; ".join(notes))

        self.features_ = used
        self.vol_transform_ = choice.transform
        self.feature_mean_, self.feature_scale_, self.feature_floors_ = choice.mean, choice.scale, choice.floors
        self.hmm_ = choice.fit.model
        self.n_states_ = choice.fit.n_states
        self.converged_ = choice.fit.converged
        self.log_likelihood_ = choice.log_likelihood
        self.bic_ = dict(choice.bic)
        self.method_used_ = METHOD_HMM
        self.fallback_ = bool(notes)
        self.fallback_reason_ = "; ".join(notes) or None
        z = self._standardise(self._features(bars))
        stats = state_statistics(returns, self.hmm_.predict_proba(z))  # fit-time description, not labels
        self._set_state_stats(stats.mean, stats.vol, stats.weight, label_states(stats))
        return self

    def _check_config(self) -> None:
        unknown = [f for f in self.features if f not in REGIME_FEATURES]
        if unknown or not self.features or len(set(self.features)) != len(self.features):
            raise ValueError(f"features must be distinct names from {REGIME_FEATURES}, got {list(self.features)}")
        if self.n_states is None and not 2 <= self.min_states <= self.max_states:
            raise ValueError(f"need 2 <= min_states <= max_states, got {self.min_states}..{self.max_states}")
        if self.n_states is not None and self.n_states < 2:
            raise ValueError(f"n_states must be at least 2, got {self.n_states}")
        if self.vol_transform not in (*VOL_TRANSFORMS, "auto"):
            raise ValueError(f"vol_transform must be 'auto' or one of {VOL_TRANSFORMS}, got {self.vol_transform!r}")
        if self.vol_window < 1 or self.n_restarts < 1:
            raise ValueError("vol_window and n_restarts must be at least 1")

    def _fit_rules(self, bars: Bars, returns: FloatArray, reason: str) -> RegimeDetector:
        log_range = np.log(bars.high[1:] / bars.low[1:]) if "range" in self.features else None
        self.rules_ = ThresholdRules.fit(returns, log_range)
        self.hmm_ = None
        self.features_ = tuple(self.features)
        self.vol_transform_ = "log"
        self.feature_floors_ = {}
        self.feature_mean_ = np.zeros(0)
        self.feature_scale_ = np.ones(0)
        self.n_states_ = len(REGIME_LABELS)
        self.method_used_ = METHOD_RULES
        self.fallback_ = True
        self.fallback_reason_ = reason
        codes = self.rules_.label(returns, log_range)
        onehot = np.eye(self.n_states_)[codes]
        stats = state_statistics(returns, onehot)
        counts = np.ones((self.n_states_, self.n_states_))  # add-one smoothing keeps every row stochastic
        np.add.at(counts, (codes[:-1], codes[1:]), 1.0)
        self.rules_transmat_ = counts / counts.sum(axis=1, keepdims=True)
        self._set_state_stats(stats.mean, stats.vol, stats.weight, list(REGIME_LABELS))
        return self

    def _set_state_stats(
        self, mean: FloatArray, vol: FloatArray, weight: FloatArray, labels: list[RegimeLabel]
    ) -> None:
        self.state_mean_return_ = np.nan_to_num(mean)
        self.state_volatility_ = np.nan_to_num(vol)
        self.state_weight_ = np.nan_to_num(weight)
        self.state_labels_: list[RegimeLabel] = list(labels)

    # --------------------------------------------------------------- filter
    def _check_fitted(self) -> None:
        if not hasattr(self, "method_used_"):
            raise ValueError("this RegimeDetector is not fitted yet: call fit(bars) or build it with from_parts")

    def _features(self, bars: Bars) -> FloatArray:
        matrix, _ = build_features(
            bars, self.features_, vol_window=self.vol_window, vol_transform=self.vol_transform_,
            floors=self.feature_floors_,
        )
        return matrix.values

    def _standardise(self, values: FloatArray) -> FloatArray:
        return np.asarray((values - self.feature_mean_) / self.feature_scale_, dtype=np.float64)

    @property
    def transmat(self) -> FloatArray:
        """Transition matrix between the detector's states (HMM states, or labels on fallback)."""
        self._check_fitted()
        if self.hmm_ is not None:
            return np.asarray(self.hmm_.transmat_, dtype=np.float64)
        assert self.rules_transmat_ is not None
        return self.rules_transmat_

    def filter(self, bars: Bars) -> RegimeFiltering:
        """Filtered state and label probabilities of bars ``1..T-1``: bar ``t`` sees bars ``<= t``.

        Raises:
            InvalidInputError: fewer than 2 bars.
            ValueError: the detector is not fitted.
        """
        self._check_fitted()
        if len(bars) < 2:
            raise InvalidInputError(
                f"data has {len(bars)} bars; labelling needs at least 2 (the first bar has no return)",
                details=[{"loc": ["body", "data", "timestamps"], "msg": "need at least 2 rows"}],
            )
        if self.hmm_ is not None:
            z = self._standardise(self._features(bars))
            log_lik = gaussian_log_likelihood(z, np.asarray(self.hmm_.means_), np.asarray(self.hmm_.covars_))
            transmat = self.transmat
            probs, _ = forward_filter(log_lik, transmat, stationary_distribution(transmat))
        else:
            assert self.rules_ is not None
            returns = np.diff(np.log(bars.close))
            log_range = np.log(bars.high[1:] / bars.low[1:]) if self.rules_.use_range else None
            probs = np.eye(self.n_states_)[self.rules_.label(returns, log_range)]
        label_probs: dict[RegimeLabel, FloatArray] = {}
        for label in REGIME_LABELS:
            cols = [i for i, name in enumerate(self.state_labels_) if name == label]
            label_probs[label] = probs[:, cols].sum(axis=1) if cols else np.zeros(probs.shape[0])
        stacked = np.column_stack([label_probs[label] for label in REGIME_LABELS])
        labels: list[RegimeLabel] = [REGIME_LABELS[i] for i in stacked.argmax(axis=1)]
        return RegimeFiltering(
            state_probs=probs,
            label_probs=label_probs,
            states=probs.argmax(axis=1).astype(np.int64),
            labels=labels,
            timestamps=bars.iso()[1:],
        )

    def to_response(
        self, bars: Bars, *, model_id: str | None = None, model_version: int | None = None,
        include_probabilities: bool = True,
    ) -> RegimeLabelResponse:
        """Label ``bars`` and package the answer with its provenance (every float finite).

        ``include_probabilities=False`` leaves out the per-bar probability arrays (most of the
        reply's bytes) for callers that only need labels and the current probability.
        """
        result = self.filter(bars)
        transmat = self.transmat
        occupancy = np.bincount(result.states, minlength=self.n_states_) / max(len(result.states), 1)
        diag = np.clip(np.diag(transmat), 0.0, 1.0)
        durations = np.minimum(1.0 / np.maximum(1.0 - diag, 1.0 / _MAX_DURATION), _MAX_DURATION)
        info = [
            RegimeStateInfo(
                state=i,
                label=self.state_labels_[i],
                mean_return=float(self.state_mean_return_[i]),
                volatility=float(self.state_volatility_[i]),
                expected_duration=float(durations[i]),
                occupancy=float(occupancy[i]),
            )
            for i in range(self.n_states_)
        ]
        last = result.labels[-1]
        return RegimeLabelResponse(
            model_id=model_id,
            model_version=model_version,
            method_used=self.method_used_,
            fallback=self.fallback_,
            fallback_reason=self.fallback_reason_,
            data_hash=bars.data_hash,
            seed=self.seed,
            as_of=bars.as_of,
            n_states=self.n_states_,
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
            converged=self.converged_,
            log_likelihood=float(self.log_likelihood_) if np.isfinite(self.log_likelihood_) else 0.0,
            bic=dict(self.bic_),
        )

    # ---------------------------------------------------------- persistence
    def to_metadata(self) -> dict[str, Any]:
        """Everything learned except ``hmm_``, as JSON-able values (the registry stores ``hmm_`` itself)."""
        self._check_fitted()
        rules = None
        if self.rules_ is not None:
            rules = {"vol_reference": self.rules_.vol_reference, "use_range": self.rules_.use_range,
                     "window": self.rules_.window}
        return {
            "format": _METADATA_FORMAT,
            "params": self.get_params(),
            "features_": list(self.features_),
            "vol_transform_": self.vol_transform_,
            "feature_floors_": {k: float(v) for k, v in self.feature_floors_.items()},
            "feature_mean_": finite_list(self.feature_mean_),
            "feature_scale_": finite_list(self.feature_scale_),
            "n_states_": int(self.n_states_),
            "state_labels_": list(self.state_labels_),
            "state_mean_return_": finite_list(self.state_mean_return_),
            "state_volatility_": finite_list(self.state_volatility_),
            "state_weight_": finite_list(self.state_weight_),
            "converged_": bool(self.converged_),
            "log_likelihood_": float(self.log_likelihood_),
            "bic_": {str(k): float(v) for k, v in self.bic_.items()},
            "method_used_": self.method_used_,
            "fallback_": bool(self.fallback_),
            "fallback_reason_": self.fallback_reason_,
            "rules_": rules,
            "rules_transmat_": None if self.rules_transmat_ is None else [finite_list(r) for r in self.rules_transmat_],
        }

    @classmethod
    def from_parts(cls, hmm: GaussianHMM | None, metadata: dict[str, Any]) -> RegimeDetector:
        """Rebuild a fitted detector from a stored HMM and :meth:`to_metadata` output.

        Raises:
            ValueError: the metadata has another format, or the HMM does not match it.
        """
        if metadata.get("format") != _METADATA_FORMAT:
            raise ValueError(f"unsupported regime metadata format {metadata.get('format')!r}")
        params = dict(metadata["params"])
        params["features"] = tuple(params["features"])
        det = cls(**params)
        det.features_ = tuple(metadata["features_"])
        det.vol_transform_ = metadata["vol_transform_"]
        det.feature_floors_ = {k: float(v) for k, v in metadata["feature_floors_"].items()}
        det.feature_mean_ = np.asarray(metadata["feature_mean_"], dtype=np.float64)
        det.feature_scale_ = np.asarray(metadata["feature_scale_"], dtype=np.float64)
        det.n_states_ = int(metadata["n_states_"])
        det._set_state_stats(
            np.asarray(metadata["state_mean_return_"], dtype=np.float64),
            np.asarray(metadata["state_volatility_"], dtype=np.float64),
            np.asarray(metadata["state_weight_"], dtype=np.float64),
            list(metadata["state_labels_"]),
        )
        det.converged_ = bool(metadata["converged_"])
        det.log_likelihood_ = float(metadata["log_likelihood_"])
        det.bic_ = {int(k): float(v) for k, v in metadata["bic_"].items()}
        det.method_used_ = metadata["method_used_"]
        det.fallback_ = bool(metadata["fallback_"])
        det.fallback_reason_ = metadata["fallback_reason_"]
        rules = metadata.get("rules_")
        det.rules_ = None if rules is None else ThresholdRules(**rules)
        rt = metadata.get("rules_transmat_")
        det.rules_transmat_ = None if rt is None else np.asarray(rt, dtype=np.float64)
        det.hmm_ = hmm
        if det.method_used_ == METHOD_HMM:
            if hmm is None or not is_usable(hmm):
                raise ValueError("metadata describes a fitted HMM but no usable hmm was given")
            if hmm.n_components != det.n_states_ or hmm.means_.shape[1] != len(det.features_):
                raise ValueError(
                    f"hmm has {hmm.n_components} states and {hmm.means_.shape[1]} features; "
                    f"metadata expects {det.n_states_} and {len(det.features_)}"
                )
        elif det.rules_ is None or det.rules_transmat_ is None:
            raise ValueError("metadata describes threshold rules but holds none")
        return det





def label_bars(request: RegimeLabelRequest, *, min_rows: int) -> tuple[RegimeDetector, Bars, RegimeLabelResponse]:
    """Fit a detector on the request's bars and label them (the stateless call).

    Args:
        request: The validated request.
        min_rows: Fewest bars accepted (from the server settings; at least 3 is enforced).

    Returns:
        The fitted detector (for a caller that stores it), the bars, and the reply.

    Raises:
        InvalidInputError: fewer than ``min_rows`` bars.
    """
    bars = bars_from_payload(request.data, min_rows=max(min_rows, _MIN_BARS))
    detector = RegimeDetector(
        n_states=request.n_states,
        min_states=request.min_states,
        max_states=request.max_states,
        features=tuple(request.features),
        seed=request.seed,
        n_restarts=request.n_restarts,
    ).fit(bars)
    reply = detector.to_response(bars, include_probabilities=request.include_probabilities)
    return detector, bars, reply
