"""Anomaly detector (the model adapter): the stored threshold and reference, persistence, not-fitted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.services.adapter import NotFittedError
from quantcrew.ml_server.services.anomaly.model import METHOD, AnomalyDetector
from tests.ml_server.services.anomaly.test_service import _bars, calm_market


def _fitted(payload: dict[str, Any], **kw: Any) -> AnomalyDetector:
    return AnomalyDetector(n_estimators=100, **kw).fit(_bars(payload), min_rows=30)


def test_from_parts_scores_exactly_as_the_fit() -> None:
    payload = calm_market(250, shocks=(200,))
    bars = _bars(payload)
    detector = _fitted(payload)
    reply = detector.to_response(bars, top_k=5)
    metadata = json.loads(json.dumps(detector.to_metadata()))
    rebuilt = AnomalyDetector.from_parts(detector.pipeline_, metadata)
    again = rebuilt.to_response(bars, top_k=5)
    assert again.scores == reply.scores and again.threshold == reply.threshold
    assert again.current_percentile == reply.current_percentile
    later = rebuilt.to_response(_bars(calm_market(260, seed=11)), top_k=5)
    assert later.threshold == reply.threshold  # the fit's threshold, not refitted


def test_from_parts_rejects_foreign_metadata() -> None:
    detector = _fitted(calm_market(100))
    with pytest.raises(ValueError, match="format"):
        AnomalyDetector.from_parts(detector.pipeline_, {"format": 99})
    with pytest.raises(ValueError, match="features"):
        AnomalyDetector.from_parts(detector.pipeline_, {**detector.to_metadata(), "features_": ["range"]})


def test_scoring_without_volume_on_a_volume_model_raises() -> None:
    detector = _fitted(calm_market(100))
    with pytest.raises(InvalidInputError, match="data.volume"):
        detector.score(_bars(calm_market(100, volume=False)))


def test_unfitted_detector_refuses_to_score() -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        AnomalyDetector().score(_bars(calm_market(50)))


def test_score_too_few_bars_raises_naming_the_count() -> None:
    with pytest.raises(InvalidInputError, match="at least 21 bars"):
        _fitted(calm_market(100)).score(_bars(calm_market(20)))


def test_to_artifact_then_from_artifact_scores_as_the_fit() -> None:
    payload = calm_market(150)
    detector = _fitted(payload)
    artifact = detector.to_artifact()
    assert (artifact.fmt, artifact.method, artifact.obj) == ("skops", METHOD, detector.pipeline_)
    info = ModelInfo(model_id="anomaly-1", name="a", version=1, family="anomaly", method=METHOD, sha256="0" * 64,
                     created_at=datetime.now(UTC), stage="full", metadata=json.loads(json.dumps(artifact.metadata)))
    rebuilt = AnomalyDetector.from_artifact(artifact.obj, info)
    assert rebuilt.score(_bars(payload)).scores.tolist() == detector.score(_bars(payload)).scores.tolist()


def test_to_artifact_before_fit_raises_not_fitted() -> None:
    with pytest.raises(NotFittedError):
        AnomalyDetector().to_artifact()
