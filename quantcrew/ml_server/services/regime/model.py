"""The regime model: a Gaussian HMM on causal bar features, filtered (never smoothed), with labels.

:class:`RegimeDetector` follows scikit-learn's estimator contract and is the regime family's
model adapter: it writes itself to the registry (the HMM through skops, or the fallback rules
as JSON) and is rebuilt from it. What it fits and why is described in
:mod:`quantcrew.ml_server.services.regime.service`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from hmmlearn.hmm import GaussianHMM

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.regime import (
    REGIME_FEATURES,
    REGIME_LABELS,
    RegimeFeature,
    RegimeLabel,
    RegimeLabelResponse,
)
from quantcrew.ml_server.services.adapter import Artifact, NotFittedError
from quantcrew.ml_server.services.bars import Bars
from quantcrew.ml_server.services.matrix import finite_list
from quantcrew.ml_server.services.regime.features import (
    VOL_FEATURES,
    VOL_TRANSFORMS,
    FeatureSource,
    build_features,
    usable_features,
)
from quantcrew.ml_server.services.regime.filter import forward_filter, gaussian_log_likelihood, stationary_distribution
from quantcrew.ml_server.services.regime.fit import is_usable, select_model
from quantcrew.ml_server.services.regime.labels import StateStats, ThresholdRules, label_states, state_statistics
from quantcrew.ml_server.services.regime.reply import RegimeFiltering, regime_reply
from quantcrew.ml_server.services.regime.trend import apply_trend, trend_reading

__all__ = ["DEFAULT_FEATURES", "METHOD_HMM", "METHOD_RULES", "RegimeDetector", "RegimeFiltering"]

FloatArray = npt.NDArray[np.float64]

DEFAULT_FEATURES: tuple[RegimeFeature, ...] = ("range",)
"""Features used when none are named: the intraday range alone (see the service's docstring)."""
METHOD_HMM = "gaussian_hmm"
METHOD_RULES = "threshold_rules"
_METADATA_FORMAT = 1
_MIN_BARS = 3
_PARAMS = ("n_states", "min_states", "max_states", "features", "seed", "n_restarts", "vol_window", "vol_transform",
           "covariance_type", "n_iter", "tol", "trend_reading")


class RegimeDetector:
    """Gaussian-HMM regime detector following scikit-learn's estimator contract; the regime model adapter.

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
        trend_reading: Whether a bar's label weighs the trend up to it (a calm label reads ``bear``
            while the days called calm are in a bear market; :mod:`~quantcrew.ml_server.services.regime.trend`).

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

    family: ClassVar[str] = "regime"

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
        trend_reading: bool = True,
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
        self.trend_reading = trend_reading

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments (JSON-able)."""
        params = {name: getattr(self, name) for name in _PARAMS}
        params["features"] = list(self.features)
        return params

    # ------------------------------------------------------------------ fit
    def fit(self, bars: Bars) -> RegimeDetector:
        """Fit the HMM (or, when no HMM can be fitted, the threshold rules) on ``bars``.

        Raises:
            InvalidInputError: fewer than 3 bars.
            ValueError: an invalid configuration (unknown feature, bad state range).
        """
        # as scikit-learn's GaussianMixture.fit does with fit_predict: the one fitting code path,
        # whose filtering of the training bars (a forward pass, cheap next to EM) is dropped here
        self.fit_filter(bars)
        return self

    def fit_filter(self, bars: Bars) -> RegimeFiltering:
        """Fit on ``bars`` and filter them: :meth:`fit` then :meth:`filter`, each feature built once.

        Raises:
            InvalidInputError: fewer than 3 bars.
            ValueError: an invalid configuration (unknown feature, bad state range).
        """
        self._check_config()
        if len(bars) < _MIN_BARS:
            raise InvalidInputError(
                f"data has {len(bars)} bars; the regime model needs at least {_MIN_BARS}",
                details=[{"loc": ["data", "timestamps"], "msg": f"need at least {_MIN_BARS} rows"}],
            )
        self.hmm_: GaussianHMM | None = None
        self.rules_: ThresholdRules | None = None
        self.rules_transmat_: FloatArray | None = None
        self.bic_: dict[int, float] = {}
        self.converged_ = False
        self.log_likelihood_ = 0.0
        self.fallback_reason_: str | None = None

        source = FeatureSource(bars, self.features, vol_window=self.vol_window)
        returns = source.returns
        used, notes = usable_features(source, self.features)
        if not used:
            self._fit_rules(bars, returns, "; ".join(notes))
            return self._filtering(bars, None)
        transforms = (
            VOL_TRANSFORMS if self.vol_transform == "auto" and any(f in VOL_FEATURES for f in used)
            else ("log" if self.vol_transform == "auto" else self.vol_transform,)
        )
        counts = [self.n_states] if self.n_states is not None else list(range(self.min_states, self.max_states + 1))
        choice, failures = select_model(
            {t: source.matrix(used, vol_transform=t) for t in transforms}, counts=counts, seed=self.seed,
            n_restarts=self.n_restarts, covariance_type=self.covariance_type, n_iter=self.n_iter, tol=self.tol,
        )
        if choice is None:
            detail = "; ".join(failures[:3]) or "no state count is small enough for the number of bars"
            notes.append(f"no Gaussian HMM could be fitted ({detail})")
            self._fit_rules(bars, returns, "; ".join(notes))
            return self._filtering(bars, None)

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
        z = choice.features
        stats = state_statistics(returns, self.hmm_.predict_proba(z))  # fit-time description, not labels
        self._set_state_stats(stats.mean, stats.vol, stats.weight, label_states(stats))
        return self._filtering(bars, z)

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

    def _fit_rules(self, bars: Bars, returns: FloatArray, reason: str) -> None:
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
            raise NotFittedError("this RegimeDetector is not fitted yet: call fit(bars) or rebuild a stored one")

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
            NotFittedError: the detector is not fitted.
        """
        self._check_fitted()
        if len(bars) < 2:
            raise InvalidInputError(
                f"data has {len(bars)} bars; labelling needs at least 2 (the first bar has no return)",
                details=[{"loc": ["data", "timestamps"], "msg": "need at least 2 rows"}],
            )
        z = self._standardise(self._features(bars)) if self.hmm_ is not None else None
        return self._filtering(bars, z)

    def _filtering(self, bars: Bars, z: FloatArray | None) -> RegimeFiltering:
        """The filter on ``bars``, given their standardised features (None on the rules fallback)."""
        if self.hmm_ is not None:
            assert z is not None
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
        filter_labels = _argmax_labels(label_probs)
        trend = trend_reading(bars.times, bars.close, label_probs["bull"] + label_probs["sideways"])
        if self.trend_reading:
            label_probs = apply_trend(label_probs, trend.bear)
        labels = _argmax_labels(label_probs) if self.trend_reading else filter_labels
        return RegimeFiltering(
            state_probs=probs,
            label_probs=label_probs,
            states=probs.argmax(axis=1).astype(np.int64),
            labels=labels,
            timestamps=bars.iso()[1:],
            trend=trend,
            trend_applied=bool(self.trend_reading),
            filter_labels=filter_labels,
        )

    def to_response(
        self, bars: Bars, *, filtering: RegimeFiltering | None = None, model_id: str | None = None,
        model_version: int | None = None, include_probabilities: bool = True,
    ) -> RegimeLabelResponse:
        """Label ``bars`` and package the answer with its provenance (every float finite).

        Args:
            bars: The bars to label.
            filtering: Their filtering when already computed (:meth:`fit_filter`); None filters them.
            model_id: Registry id of a stored model, None for a stateless answer.
            model_version: Its version.
            include_probabilities: False leaves out the per-bar probability arrays (most of the
                reply's bytes) for callers that only need labels and the current probability.
        """
        return regime_reply(self, bars, self.filter(bars) if filtering is None else filtering, model_id=model_id,
                            model_version=model_version, include_probabilities=include_probabilities)

    # ---------------------------------------------------------- persistence
    def to_artifact(self) -> Artifact:
        """The HMM through skops, with everything else in the metadata; the rules fallback is all JSON."""
        metadata = self.to_metadata()
        if self.hmm_ is not None:
            return Artifact(obj=self.hmm_, fmt="skops", method=self.method_used_, metadata=metadata)
        return Artifact(obj=None, fmt="json", method=self.method_used_, metadata=metadata)

    @classmethod
    def from_artifact(cls, obj: Any, info: ModelInfo, **context: Any) -> RegimeDetector:
        """The fitted detector again, from its verified artifact and registry entry.

        Raises:
            ValueError, KeyError, TypeError: the entry does not describe a detector (a 409 on rebuild).
        """
        return cls.from_parts(None if isinstance(obj, dict) else obj, info.metadata)

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
        stats = StateStats(
            mean=np.asarray(metadata["state_mean_return_"], dtype=np.float64),
            vol=np.asarray(metadata["state_volatility_"], dtype=np.float64),
            weight=np.asarray(metadata["state_weight_"], dtype=np.float64),
        )
        # an HMM's states are named again by today's rule from their stored statistics (a model stored
        # before a state with a falling mean stopped being called bull answers as a new fit would)
        names = label_states(stats) if metadata["method_used_"] == METHOD_HMM else list(metadata["state_labels_"])
        det._set_state_stats(stats.mean, stats.vol, stats.weight, names)
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


def _argmax_labels(label_probs: dict[RegimeLabel, FloatArray]) -> list[RegimeLabel]:
    """The most probable label of each bar (ties go to the first in ``REGIME_LABELS`` order)."""
    stacked = np.column_stack([label_probs[label] for label in REGIME_LABELS])
    return [REGIME_LABELS[i] for i in stacked.argmax(axis=1)]
