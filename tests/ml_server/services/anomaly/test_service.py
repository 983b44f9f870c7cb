"""Anomaly verbs: detect (stateless), fit (stored), score (a stored model); shocks found, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantcrew.ml_server.errors import InvalidInputError, ModelNotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.anomaly import AnomalyFitRequest, AnomalyRequest, AnomalyScoreRequest
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.services.anomaly.features import resolve_features
from quantcrew.ml_server.services.anomaly.service import detect, fit, score
from quantcrew.ml_server.services.bars import Bars, bars_from_payload

SIGMA = 0.01
SHOCKS = (150, 260, 330)


def calm_market(n: int = 400, *, seed: int = 7, shocks: tuple[int, ...] = (), volume: bool = True) -> dict[str, Any]:
    """A plain GBM payload (daily sigma 1 %); each shock bar moves 10 sigma intraday on 6x volume."""
    rng = np.random.default_rng(seed)
    move = rng.normal(0.0, SIGMA * 0.9, n)
    gap = rng.normal(0.0, SIGMA * 0.3, n)
    vol = rng.lognormal(13.0, 0.2, n)
    for i, t in enumerate(shocks):
        move[t] = (-1) ** i * 10 * SIGMA
        vol[t] *= 6.0
    log_close = np.log(100.0) + np.cumsum(gap + move)
    close = np.exp(log_close)
    open_ = np.exp(log_close - move)
    wick = np.abs(rng.normal(0.0, SIGMA * 0.3, (2, n)))
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    days = np.busday_offset(np.datetime64("2021-01-04", "D"), np.arange(n), roll="forward")
    payload: dict[str, Any] = {
        "timestamps": np.datetime_as_string(days).tolist(),
        "open": open_.tolist(), "high": high.tolist(), "low": low.tolist(), "close": close.tolist(),
    }
    if volume:
        payload["volume"] = vol.tolist()
    return payload


def _bars(payload: dict[str, Any]) -> Bars:
    return bars_from_payload(OHLCVPayload.model_validate(payload))


def _request(payload: dict[str, Any], **kw: Any) -> AnomalyRequest:
    """A request with 100 trees unless told otherwise (half the default: faster, same conclusions)."""
    return AnomalyRequest.model_validate({"data": payload, "n_estimators": 100, **kw})


def test_detect_ranks_injected_shocks_in_top5_with_dates() -> None:
    payload = calm_market(shocks=SHOCKS)
    reply = detect(_request(payload, n_estimators=200), min_rows=30)  # the default forest
    top5 = [p.timestamp for p in reply.top[:5]]
    for t in SHOCKS:
        assert payload["timestamps"][t] in top5
    shock_points = [p for p in reply.top if p.timestamp in {payload["timestamps"][t] for t in SHOCKS}]
    assert all(p.flagged for p in shock_points)
    assert {p.rank for p in shock_points} <= {1, 2, 3, 4, 5}
    assert abs(shock_points[0].features["abs_return"]) > 0.09
    assert shock_points[0].features["volume_z"] > 5


def test_detect_scores_follow_the_higher_is_more_anomalous_convention() -> None:
    reply = detect(_request(calm_market(shocks=SHOCKS)), min_rows=30)
    scores = np.array(reply.scores)
    assert [p.score for p in reply.top] == sorted(scores, reverse=True)[: len(reply.top)]
    assert [p.rank for p in reply.top] == list(range(1, 11))
    assert list(scores > reply.threshold) == reply.flags
    assert reply.n_flagged == sum(reply.flags)


@pytest.mark.parametrize("contamination", [0.01, 0.05, 0.1])
def test_flag_count_matches_contamination(contamination: float) -> None:
    reply = detect(_request(calm_market(600, seed=3), contamination=contamination), min_rows=30)
    expected = contamination * len(reply.scores)
    assert abs(reply.n_flagged - expected) <= 1.0


def test_warmup_bars_are_dropped_and_reported() -> None:
    payload = calm_market(200)
    reply = detect(_request(payload, zscore_window=25), min_rows=30)
    assert len(reply.timestamps) == len(reply.scores) == len(reply.flags) == 200 - 25
    assert reply.timestamps[0] == payload["timestamps"][25]
    assert any("25 warm-up bar" in w for w in reply.warnings)
    no_volume = detect(_request(calm_market(200, volume=False)), min_rows=30)
    assert len(no_volume.scores) == 199
    assert no_volume.features_used == ["log_return", "abs_return", "range", "gap"]
    range_only = detect(_request(payload, features=["range"]), min_rows=30)
    assert len(range_only.scores) == 200 and range_only.warnings == []


def test_constant_feature_is_warned_and_scores_stay_finite() -> None:
    payload = calm_market(100)
    payload["volume"] = [1000.0] * 100
    reply = detect(_request(payload), min_rows=30)
    assert any("volume_z" in w and "constant" in w for w in reply.warnings)
    assert np.isfinite(reply.scores).all() and np.isfinite(reply.current_score)


def test_current_percentile_is_share_of_training_scores_below() -> None:
    reply = detect(_request(calm_market(300, shocks=(299,))), min_rows=30)
    scores = np.array(reply.scores)
    assert reply.current_score == scores[-1]
    assert reply.current_percentile == pytest.approx(np.mean(scores < scores[-1]))
    assert reply.current_flagged and reply.current_percentile > 0.98


def test_same_seed_same_scores_and_other_seed_differs() -> None:
    payload = calm_market(200)
    a = detect(_request(payload, seed=4), min_rows=30)
    b = detect(_request(payload, seed=4), min_rows=30)
    c = detect(_request(payload, seed=5), min_rows=30)
    assert a.scores == b.scores and a.threshold == b.threshold
    assert a.scores != c.scores
    assert a.seed == 4 and a.method_used == "isolation_forest" and a.fallback is False
    assert a.data_hash.startswith("sha256:") and a.model_id is None


def test_volume_z_without_volume_raises_naming_data_volume() -> None:
    with pytest.raises(InvalidInputError, match="data.volume") as err:
        detect(_request(calm_market(100, volume=False), features=["volume_z", "range"]), min_rows=30)
    assert err.value.details[0]["loc"] == ["data", "volume"]
    with pytest.raises(InvalidInputError, match="volume"):
        resolve_features(["volume_z"], has_volume=False)


def test_too_few_bars_raises_naming_the_count() -> None:
    with pytest.raises(InvalidInputError, match="at least 50 bars") as err:
        detect(_request(calm_market(45)), min_rows=30)
    assert err.value.details[0]["loc"] == ["data", "timestamps"]


def test_schema_refuses_bad_settings() -> None:
    payload = calm_market(60)
    bad: dict[str, Any]
    for bad in ({"contamination": 0.0}, {"contamination": 0.6}, {"n_estimators": 5}, {"zscore_window": 2},
                {"top_k": 0}, {"features": ["range", "range"]}, {"features": ["rsi"]}, {"features": []}):
        with pytest.raises(ValueError):
            _request(payload, **bad)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ModelRegistry]:
    reg = ModelRegistry(tmp_path / "r.db", tmp_path / "artifacts")
    yield reg
    reg.close()


def test_fit_stores_the_detector_and_returns_the_detect_reply(registry: ModelRegistry) -> None:
    payload = calm_market(200, shocks=(150,))
    request = AnomalyFitRequest.model_validate({"data": payload, "name": "spy", "n_estimators": 50})
    fitted = fit(request, registry, min_rows=30)
    detected = detect(request, min_rows=30)
    assert fitted.model.family == "anomaly" and fitted.model_id == fitted.model.model_id
    assert fitted.scores == detected.scores and fitted.model.metadata["threshold_"] == fitted.threshold
    assert fitted.model.metadata["n_bars"] == 200 and fitted.model.metadata["data_hash"] == detected.data_hash


def test_score_rebuilds_the_stored_detector(registry: ModelRegistry) -> None:
    payload = calm_market(200, shocks=(150,))
    fitted = fit(AnomalyFitRequest.model_validate({"data": payload, "n_estimators": 50}), registry, min_rows=30)
    scored = score(AnomalyScoreRequest.model_validate({"model_id": fitted.model_id, "data": payload}), registry)
    assert scored.scores == fitted.scores and scored.model_version == 1
    with pytest.raises(ModelNotFoundError):
        score(AnomalyScoreRequest.model_validate({"model_id": "anomaly-nope", "data": payload}), registry)
