"""Regime family: market regimes from OHLCV bars, a Gaussian HMM filtered (never smoothed), with labels.

Features (causal: the row of bar ``t`` uses bars ``<= t``; bar 0 has no return and no label,
so every per-bar output has ``len(bars) - 1`` entries, for bars ``1..T-1``):

* ``log_return``: daily close-to-close log return, in percent.
* ``realized_vol``: RMS of the last ``vol_window`` percent returns (trailing), variance-stabilised.
* ``range``: ``100 * log(high / low)``, Parkinson's intraday range in percent, variance-stabilised.

Details in :mod:`quantcrew.ml_server.services.regime.features`. Features are standardised
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
:func:`~quantcrew.ml_server.services.regime.fit.n_parameters`), jointly with the volatility
transform (``log`` or ``sqrt``), whose likelihoods are made comparable on the raw scale by the
Jacobian. Each count is fitted from ``n_restarts`` starts (seeds ``seed, seed + 1, ...``); the
best converged log-likelihood wins (see :mod:`quantcrew.ml_server.services.regime.fit`).

Non-convergence policy: a fit that hit the iteration cap is still a valid HMM (EM never lowers
the likelihood), so when no restart converged the best one is used and reported with
``converged=False``, ``fallback=False``: the method is the one asked for, and the flag says how
far to trust it. When no HMM can be fitted at all (every restart raised, too few bars for two
states, constant prices), the detector falls back to deterministic threshold rules:
``method_used="threshold_rules"``, ``fallback=True``, ``fallback_reason`` saying what failed,
``converged=False``, ``log_likelihood=0.0``, empty ``bic``; it never raises for bars it could read.

The model is :class:`~quantcrew.ml_server.services.regime.model.RegimeDetector`; this module holds
the family's verbs: :func:`label` (stateless), :func:`fit` (stored) and :func:`predict` (a stored
model on new bars). A fit builds each feature of the bars once and labels them from the features
it was fitted on.

Labels: each state is named from its return statistics by the volatility-first rule of
:mod:`quantcrew.ml_server.services.regime.labels`; ``label_probabilities`` sums the FILTERED
state probabilities per label (forward pass of :mod:`quantcrew.ml_server.services.regime.filter`
from the stationary distribution), read with the trend of the days called calm
(:mod:`quantcrew.ml_server.services.regime.trend`: their probability moves to ``bear`` in a bear
market), and each bar's label is their argmax.

What the stateless :func:`label` knows: one fit on the whole window sent. Each bar's filter and
trend reading use bars ``<= t``, but the model, its scaling and its state names come from every
bar sent, so only the LAST bar's label is what was knowable at its close. Labels that are causal
for every bar come from the walk-forward job of :mod:`quantcrew.ml_server.services.regime.causal`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.regime import (
    REGIME_LABELS,
    RegimeFitRequest,
    RegimeFitResponse,
    RegimeLabelRequest,
    RegimeLabelResponse,
    RegimePredictRequest,
)
from quantcrew.ml_server.services import serving
from quantcrew.ml_server.services.adapter import rebuild, store_fit
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.monitor import capture
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.monitor.reference import FloatArray, save_reference
from quantcrew.ml_server.services.regime.model import RegimeDetector

__all__ = ["fit", "label", "predict"]

_MIN_BARS = 3
_DETECTOR_PARAMS = frozenset({"n_states", "min_states", "max_states", "features", "seed", "n_restarts",
                               "trend_reading"})
"""The request fields that configure the detector."""


def label(request: RegimeLabelRequest, *, min_rows: int) -> RegimeLabelResponse:
    """Fit an HMM on the request's bars and label every bar from filtered probabilities (nothing kept).

    Args:
        request: The validated request.
        min_rows: Fewest bars accepted (from the server settings; at least 3 is enforced).

    Raises:
        InvalidInputError: fewer than ``min_rows`` bars.
    """
    bars = bars_from_payload(request.data, min_rows=max(min_rows, _MIN_BARS))
    detector = RegimeDetector(**request.model_dump(include=set(_DETECTOR_PARAMS)))
    return detector.to_response(bars, filtering=detector.fit_filter(bars),
                                include_probabilities=request.include_probabilities)


def fit(request: RegimeFitRequest, registry: ModelRegistry, *, min_rows: int) -> RegimeFitResponse:
    """Fit like :func:`label`, store the detector as a new version of ``request.name``, label the bars.

    Raises:
        InvalidInputError: fewer than ``min_rows`` bars.
    """
    bars = bars_from_payload(request.data, min_rows=max(min_rows, _MIN_BARS))
    detector = RegimeDetector(**request.model_dump(include=set(_DETECTOR_PARAMS)))
    reply = detector.to_response(bars, filtering=detector.fit_filter(bars),
                                 include_probabilities=request.include_probabilities)
    stored = store_fit(registry, detector, reply, RegimeFitResponse, name=request.name, metadata=bars.provenance(),
                       trigger=request.trigger)
    names, matrix, outputs = drift_inputs(detector, bars, reply.labels)
    save_reference(registry.db_path, stored.model_id, "regime", names, matrix, outputs)
    return stored


def drift_inputs(detector: RegimeDetector, bars: Bars,
                 labels: Sequence[str] | None = None) -> tuple[tuple[str, ...], FloatArray, FloatArray]:
    """What drift compares for a regime model on ``bars``: the HMM's features of bars ``1..T-1`` (after the
    volatility transform, before standardisation, as the prediction log records them; none on the rules
    fallback) and each bar's label index in ``REGIME_LABELS`` (the log's output). ``labels`` already computed
    are reused."""
    if labels is None:
        labels = detector.filter(bars).labels
    outputs = np.array([REGIME_LABELS.index(label) for label in labels], dtype=np.float64)
    if detector.hmm_ is None:
        return (), np.zeros((len(outputs), 0)), outputs
    return tuple(detector.features_), detector._features(bars), outputs


def predict(request: RegimePredictRequest, registry: ModelRegistry, log: PredictionLog | None = None,
            deployments: DeploymentStore | None = None) -> RegimeLabelResponse:
    """Label new bars with a stored detector: filtered probabilities, no refit (logged on ``log``).

    The detector is the pinned ``model_id``, or the version the deployment stages of ``name`` route the
    request to (its shadows run too: see :mod:`~quantcrew.ml_server.services.serving`).

    Raises:
        ModelNotFoundError: unknown id, or not a regime model (404).
        NotFoundError: a name with no deployed version (404).
        ArtifactIntegrityError: the stored artifact is refused or does not rebuild (409).
        InvalidInputError: fewer than 2 bars.
    """
    bars = bars_from_payload(request.data, min_rows=2)

    def answer(model_id: str, sink: PredictionLog | None) -> RegimeLabelResponse:
        detector, info = rebuild(registry, model_id, RegimeDetector)
        reply = detector.to_response(bars, model_id=info.model_id, model_version=info.version,
                                     include_probabilities=request.include_probabilities)
        capture.regime(sink, request, info, detector, bars, reply)
        return reply

    return serving.serve(request, deployments, log, answer, _shadow_summary)


def _shadow_summary(reply: RegimeLabelResponse) -> dict[str, object]:
    return {"label": reply.current_label, "probability": reply.current_probability}
