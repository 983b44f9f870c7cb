"""Anomaly family: anomalous bars from OHLCV, an IsolationForest on causal per-bar features.

Features (:mod:`quantcrew.ml_server.services.anomaly.features`) use the bar itself and earlier
bars only; the warm-up bars that lack a value are not scored. The model is a scikit-learn
``Pipeline`` of a ``StandardScaler`` and an ``IsolationForest``: the scaler fitted on the
training bars is stored with the forest, so new bars are scaled exactly as the training bars
were (isolation trees split uniformly between a feature's extremes, so the scaling leaves the
scores unchanged; it keeps the stored features on one comparable scale).

Scores: ``score = -score_samples`` (higher = more anomalous). The flag threshold is
``-offset_`` of the forest, i.e. the ``1 - contamination`` quantile of the training scores; a
bar is flagged when its score is strictly above it, as scikit-learn's ``predict`` does. The
threshold learned at fit is reused as is when a stored model scores new bars.

``current_percentile`` is the share of the training scores below the last bar's score. It is
read from a reference of the training scores stored with the model: all of them, sorted,
up to :data:`REFERENCE_POINTS` bars; beyond that, that many evenly spaced quantiles (the share
is then exact to ``1 / REFERENCE_POINTS``). Detect, fit and score use the same reference, so a
stored model scoring its own training bars answers exactly as the fit did.

The model is :class:`~quantcrew.ml_server.services.anomaly.model.AnomalyDetector`; this module holds
the family's verbs: :func:`detect` (stateless), :func:`fit` (stored) and :func:`score` (a stored
model on new bars).
"""

from __future__ import annotations

from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.anomaly import (
    AnomalyFitRequest,
    AnomalyFitResponse,
    AnomalyRequest,
    AnomalyResponse,
    AnomalyScoreRequest,
)
from quantcrew.ml_server.services import serving
from quantcrew.ml_server.services.adapter import rebuild, store_fit
from quantcrew.ml_server.services.anomaly.features import build_features, resolve_features, warmup_bars
from quantcrew.ml_server.services.anomaly.model import METHOD, AnomalyDetector
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.monitor import capture
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.monitor.reference import FloatArray, save_reference

__all__ = ["METHOD", "detect", "fit", "score"]


def detect(request: AnomalyRequest, *, min_rows: int) -> AnomalyResponse:
    """Fit a detector on the request's bars and score each one (nothing kept).

    Args:
        request: The validated request.
        min_rows: Fewest scored bars (after the warm-up) accepted, from the server settings.

    Raises:
        InvalidInputError: too few bars, or ``volume_z`` requested without volume.
    """
    detector, bars = _fitted(request, min_rows)
    return detector.to_response(bars, top_k=request.top_k)


def fit(request: AnomalyFitRequest, registry: ModelRegistry, *, min_rows: int) -> AnomalyFitResponse:
    """Fit like :func:`detect`, store the detector as a new version of ``request.name``, score the bars.

    Raises:
        InvalidInputError: too few bars, or ``volume_z`` requested without volume.
    """
    detector, bars = _fitted(request, min_rows)
    reply = detector.to_response(bars, top_k=request.top_k)
    stored = store_fit(registry, detector, reply, AnomalyFitResponse, name=request.name, metadata=bars.provenance(),
                       trigger=request.trigger)
    names, matrix, outputs = drift_inputs(detector, bars)
    save_reference(registry.db_path, stored.model_id, "anomaly", names, matrix, outputs)
    return stored


def drift_inputs(detector: AnomalyDetector, bars: Bars) -> tuple[tuple[str, ...], FloatArray, FloatArray]:
    """What drift compares for an anomaly model on ``bars``: the features of the bars after the warm-up
    (as the prediction log records them) and their anomaly scores (the log's output)."""
    scored = detector.score(bars)
    return tuple(detector.features_), scored.features, scored.scores


def score(request: AnomalyScoreRequest, registry: ModelRegistry, log: PredictionLog | None = None,
          deployments: DeploymentStore | None = None) -> AnomalyResponse:
    """Score new bars with a stored detector: the fit's scaler, forest and threshold, no refit (logged on ``log``).

    The detector is the pinned ``model_id``, or the version the deployment stages of ``name`` route the
    request to (its shadows run too: see :mod:`~quantcrew.ml_server.services.serving`).

    Raises:
        ModelNotFoundError: unknown id, or not an anomaly model (404).
        NotFoundError: a name with no deployed version (404).
        ArtifactIntegrityError: the stored artifact is refused or does not rebuild (409).
        InvalidInputError: no bar left after the warm-up, or the model needs volume the bars lack.
    """
    bars = bars_from_payload(request.data, min_rows=2)

    def answer(model_id: str, sink: PredictionLog | None) -> AnomalyResponse:
        detector, info = rebuild(registry, model_id, AnomalyDetector)
        reply = detector.to_response(bars, top_k=request.top_k, model_id=info.model_id, model_version=info.version)
        capture.anomaly(sink, request, info, detector, bars, reply, build_features, warmup_bars)
        return reply

    return serving.serve(request, deployments, log, answer,
                         lambda reply: {"score": reply.current_score, "flagged": reply.current_flagged})


def _fitted(request: AnomalyRequest, min_rows: int) -> tuple[AnomalyDetector, Bars]:
    bars = bars_from_payload(request.data, min_rows=2)
    detector = AnomalyDetector(features=request.features, contamination=request.contamination,
                               n_estimators=request.n_estimators, zscore_window=request.zscore_window,
                               seed=request.seed)
    # resolve first, so that volume_z without volume is reported before the row count
    resolve_features(detector.features, has_volume=bars.volume is not None)
    return detector.fit(bars, min_rows=min_rows), bars
