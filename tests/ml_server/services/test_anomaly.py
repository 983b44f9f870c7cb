"""Anomaly detector: causal features, injected shocks found, contamination, persistence, bad input."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.anomaly import AnomalyRequest
from quantcrew.ml_server.schemas.common import OHLCVPayload
from quantcrew.ml_server.services.anomaly import AnomalyDetector, detect
from quantcrew.ml_server.services.anomaly_features import Z_CAP, build_features, resolve_features
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
    _, _, reply = detect(_request(payload, n_estimators=200), min_rows=30)  # the default forest
    top5 = [p.timestamp for p in reply.top[:5]]
    for t in SHOCKS:
        assert payload["timestamps"][t] in top5
    shock_points = [p for p in reply.top if p.timestamp in {payload["timestamps"][t] for t in SHOCKS}]
    assert all(p.flagged for p in shock_points)
    assert {p.rank for p in shock_points} <= {1, 2, 3, 4, 5}
    assert abs(shock_points[0].features["abs_return"]) > 0.09
    assert shock_points[0].features["volume_z"] > 5


def test_detect_scores_follow_the_higher_is_more_anomalous_convention() -> None:
    _, _, reply = detect(_request(calm_market(shocks=SHOCKS)), min_rows=30)
    scores = np.array(reply.scores)
    assert [p.score for p in reply.top] == sorted(scores, reverse=True)[: len(reply.top)]
    assert [p.rank for p in reply.top] == list(range(1, 11))
    assert list(scores > reply.threshold) == reply.flags
    assert reply.n_flagged == sum(reply.flags)


@pytest.mark.parametrize("contamination", [0.01, 0.05, 0.1])
def test_flag_count_matches_contamination(contamination: float) -> None:
    _, _, reply = detect(_request(calm_market(600, seed=3), contamination=contamination), min_rows=30)
    expected = contamination * len(reply.scores)
    assert abs(reply.n_flagged - expected) <= 1.0


def test_warmup_bars_are_dropped_and_reported() -> None:
    payload = calm_market(200)
    _, _, reply = detect(_request(payload, zscore_window=25), min_rows=30)
    assert len(reply.timestamps) == len(reply.scores) == len(reply.flags) == 200 - 25
    assert reply.timestamps[0] == payload["timestamps"][25]
    assert any("25 warm-up bar" in w for w in reply.warnings)
    _, _, no_volume = detect(_request(calm_market(200, volume=False)), min_rows=30)
    assert len(no_volume.scores) == 199
    assert no_volume.features_used == ["log_return", "abs_return", "range", "gap"]
    _, _, range_only = detect(_request(payload, features=["range"]), min_rows=30)
    assert len(range_only.scores) == 200 and range_only.warnings == []


def test_features_match_hand_computation() -> None:
    payload = calm_market(40)
    bars = _bars(payload)
    names = ("log_return", "abs_return", "range", "gap", "volume_z")
    table = build_features(bars, names, window=5)
    assert table.n_warmup == 5 and table.values.shape == (35, 5)
    t = 12  # bar 12 is row 7 of the table
    row = table.values[t - 5]
    c, o, h, lo, v = (np.asarray(payload[k]) for k in ("close", "open", "high", "low", "volume"))
    assert row[0] == pytest.approx(np.log(c[t] / c[t - 1]))
    assert row[1] == pytest.approx(abs(np.log(c[t] / c[t - 1])))
    assert row[2] == pytest.approx(np.log(h[t] / lo[t]))
    assert row[3] == pytest.approx(np.log(o[t] / c[t - 1]))
    past = v[t - 5:t]
    assert row[4] == pytest.approx((v[t] - past.mean()) / past.std(ddof=1))


def test_volume_z_has_no_look_ahead() -> None:
    payload = calm_market(120)
    base = build_features(_bars(payload), ("volume_z", "log_return", "gap"), window=20).values
    changed = dict(payload)
    changed["volume"] = list(payload["volume"])
    changed["volume"][90] *= 50.0
    changed["close"] = list(payload["close"])
    changed["high"] = list(payload["high"])
    changed["close"][90] = changed["high"][90] = payload["high"][90] * 1.2
    after = build_features(_bars(changed), ("volume_z", "log_return", "gap"), window=20).values
    row = 90 - 20
    np.testing.assert_array_equal(after[:row], base[:row])  # every earlier bar is untouched
    assert after[row, 0] > base[row, 0] + 10  # the changed bar itself moved


def test_constant_volume_window_gives_capped_z_without_nan() -> None:
    payload = calm_market(80)
    payload["volume"] = [1000.0] * 80
    payload["volume"][60] = 5000.0
    values = build_features(_bars(payload), ("volume_z",), window=10).values[:, 0]
    assert np.isfinite(values).all()
    assert values[60 - 10] == Z_CAP
    assert values[0] == 0.0


def test_huge_volumes_do_not_overflow_the_z_score() -> None:
    payload = calm_market(80)
    bars = _bars(payload)
    reference = build_features(bars, ("volume_z",), window=10).values[:, 0]
    payload["volume"] = [v * 1e300 for v in payload["volume"]]
    huge = build_features(_bars(payload), ("volume_z",), window=10).values[:, 0]
    np.testing.assert_allclose(huge, reference, rtol=1e-9)


def test_constant_feature_is_warned_and_scores_stay_finite() -> None:
    payload = calm_market(100)
    payload["volume"] = [1000.0] * 100
    _, _, reply = detect(_request(payload), min_rows=30)
    assert any("volume_z" in w and "constant" in w for w in reply.warnings)
    assert np.isfinite(reply.scores).all() and np.isfinite(reply.current_score)


def test_current_percentile_is_share_of_training_scores_below() -> None:
    _, _, reply = detect(_request(calm_market(300, shocks=(299,))), min_rows=30)
    scores = np.array(reply.scores)
    assert reply.current_score == scores[-1]
    assert reply.current_percentile == pytest.approx(np.mean(scores < scores[-1]))
    assert reply.current_flagged and reply.current_percentile > 0.98


def test_same_seed_same_scores_and_other_seed_differs() -> None:
    payload = calm_market(200)
    a = detect(_request(payload, seed=4), min_rows=30)[2]
    b = detect(_request(payload, seed=4), min_rows=30)[2]
    c = detect(_request(payload, seed=5), min_rows=30)[2]
    assert a.scores == b.scores and a.threshold == b.threshold
    assert a.scores != c.scores
    assert a.seed == 4 and a.method_used == "isolation_forest" and a.fallback is False
    assert a.data_hash.startswith("sha256:") and a.model_id is None


def test_from_parts_scores_exactly_as_the_fit() -> None:
    payload = calm_market(250, shocks=(200,))
    detector, bars, reply = detect(_request(payload, top_k=5), min_rows=30)
    metadata = json.loads(json.dumps(detector.to_metadata()))
    rebuilt = AnomalyDetector.from_parts(detector.pipeline_, metadata)
    again = rebuilt.to_response(bars, top_k=5)
    assert again.scores == reply.scores and again.threshold == reply.threshold
    assert again.current_percentile == reply.current_percentile
    later = rebuilt.to_response(_bars(calm_market(260, seed=11)), top_k=5)
    assert later.threshold == reply.threshold  # the fit's threshold, not refitted


def test_from_parts_rejects_foreign_metadata() -> None:
    detector = detect(_request(calm_market(100)), min_rows=30)[0]
    with pytest.raises(ValueError, match="format"):
        AnomalyDetector.from_parts(detector.pipeline_, {"format": 99})
    with pytest.raises(ValueError, match="features"):
        AnomalyDetector.from_parts(detector.pipeline_, {**detector.to_metadata(), "features_": ["range"]})


def test_volume_z_without_volume_raises_naming_data_volume() -> None:
    with pytest.raises(InvalidInputError, match="data.volume") as err:
        detect(_request(calm_market(100, volume=False), features=["volume_z", "range"]), min_rows=30)
    assert err.value.details[0]["loc"] == ["body", "data", "volume"]
    with pytest.raises(InvalidInputError, match="volume"):
        resolve_features(["volume_z"], has_volume=False)


def test_scoring_without_volume_on_a_volume_model_raises() -> None:
    detector = detect(_request(calm_market(100)), min_rows=30)[0]
    with pytest.raises(InvalidInputError, match="data.volume"):
        detector.score(_bars(calm_market(100, volume=False)))


def test_too_few_bars_raises_naming_the_count() -> None:
    with pytest.raises(InvalidInputError, match="at least 50 bars") as err:
        detect(_request(calm_market(45)), min_rows=30)
    assert err.value.details[0]["loc"] == ["body", "data", "timestamps"]
    detector = detect(_request(calm_market(100)), min_rows=30)[0]
    with pytest.raises(InvalidInputError, match="at least 21 bars"):
        detector.score(_bars(calm_market(20)))


def test_schema_refuses_bad_settings() -> None:
    payload = calm_market(60)
    bad: dict[str, Any]
    for bad in ({"contamination": 0.0}, {"contamination": 0.6}, {"n_estimators": 5}, {"zscore_window": 2},
                {"top_k": 0}, {"features": ["range", "range"]}, {"features": ["rsi"]}, {"features": []}):
        with pytest.raises(ValueError):
            _request(payload, **bad)


def test_unfitted_detector_refuses_to_score() -> None:
    with pytest.raises(ValueError, match="not fitted"):
        AnomalyDetector().score(_bars(calm_market(50)))
