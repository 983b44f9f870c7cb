"""Regime detector (the model adapter): filtered (causal) labels, BIC, fallbacks, persistence, accuracy."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM

from quantcrew.data.loaders import to_payload_dict
from quantcrew.data.ohlcv import OHLCV
from quantcrew.data.synthetic import generate_regime_market, oracle_filter
from quantcrew.ml_server.schemas.common import ModelInfo, OHLCVPayload
from quantcrew.ml_server.schemas.regime import REGIME_LABELS
from quantcrew.ml_server.services.adapter import NotFittedError
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.regime.filter import stationary_distribution
from quantcrew.ml_server.services.regime.model import METHOD_HMM, METHOD_RULES, RegimeDetector

# bull <-> volatile only: bear and sideways are unreachable
TWO_REGIMES = np.array(
    [
        [0.99, 0.0, 0.0, 0.01],
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 0.0, 0.0, 0.0],
        [0.02, 0.0, 0.0, 0.98],
    ]
)


def _payload(ohlcv: OHLCV) -> OHLCVPayload:
    return OHLCVPayload.model_validate(to_payload_dict(ohlcv))


def _bars(ohlcv: OHLCV) -> Bars:
    return bars_from_payload(_payload(ohlcv))


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


def _constant_bars(n: int = 120) -> Bars:
    ts = np.busday_offset(np.datetime64("2020-01-02", "D"), np.arange(n), roll="forward").astype("datetime64[ns]")
    flat = np.full(n, 50.0)
    return _bars(OHLCV("FLAT", ts, flat, flat, flat, flat, np.zeros(n)))


@pytest.fixture(scope="module")
def market():
    return generate_regime_market(1500, seed=1)  # all four regimes well represented


@pytest.fixture(scope="module")
def market_bars(market) -> Bars:
    return _bars(market.bars)


@pytest.fixture(scope="module")
def fitted(market_bars) -> RegimeDetector:
    return RegimeDetector(seed=0).fit(market_bars)


def test_filter_label_does_not_change_when_bars_are_appended(market) -> None:
    detector = RegimeDetector(n_states=4).fit(_bars(market.bars.head(600)))
    full = detector.filter(_bars(market.bars.head(600)))
    head = detector.filter(_bars(market.bars.head(400)))
    assert len(head.labels) == 399
    assert full.labels[:399] == head.labels
    np.testing.assert_allclose(full.state_probs[:399], head.state_probs, atol=1e-12)


def test_filter_matches_hmmlearn_posterior_of_each_prefix_last_bar(fitted, market_bars) -> None:
    # For the LAST bar of a sequence, smoothing and filtering coincide: a check of the forward pass.
    result = fitted.filter(market_bars)
    hmm = fitted.hmm_
    z = (np.log(100 * np.log(market_bars.high[1:] / market_bars.low[1:])) if fitted.vol_transform_ == "log"
         else np.sqrt(100 * np.log(market_bars.high[1:] / market_bars.low[1:])))
    z = ((z - fitted.feature_mean_[0]) / fitted.feature_scale_[0])[:, None]
    original = hmm.startprob_.copy()
    try:
        hmm.startprob_ = stationary_distribution(hmm.transmat_)
        for end in (1, 50, 333, 1000):
            np.testing.assert_allclose(hmm.predict_proba(z[:end])[-1], result.state_probs[end - 1], atol=1e-8)
    finally:
        hmm.startprob_ = original


def test_fit_labels_stable_across_seeds(market_bars) -> None:
    a = RegimeDetector(seed=0).fit(market_bars).filter(market_bars).labels
    b = RegimeDetector(seed=17, n_restarts=6).fit(market_bars).filter(market_bars).labels
    assert np.mean(np.array(a) == np.array(b)) >= 0.95


def test_fit_labels_come_from_statistics_not_state_index(fitted, market_bars) -> None:
    # Permute the hidden states of the fitted model: every label must follow its state.
    metadata = fitted.to_metadata()
    hmm = fitted.hmm_
    perm = np.roll(np.arange(hmm.n_components), 1)
    permuted = GaussianHMM(n_components=hmm.n_components, covariance_type=hmm.covariance_type)
    permuted.n_features = hmm.n_features
    permuted.startprob_ = hmm.startprob_[perm]
    permuted.transmat_ = hmm.transmat_[np.ix_(perm, perm)]
    permuted.means_ = hmm.means_[perm]
    permuted.covars_ = hmm.covars_[perm]
    for key in ("state_labels_", "state_mean_return_", "state_volatility_", "state_weight_"):
        metadata[key] = [metadata[key][i] for i in perm]
    rebuilt = RegimeDetector.from_parts(permuted, metadata)
    assert rebuilt.filter(market_bars).labels == fitted.filter(market_bars).labels


def test_bic_picks_two_states_on_two_regime_market() -> None:
    market = generate_regime_market(1500, transition=TWO_REGIMES, seed=4)
    bars = _bars(market.bars)
    detector = RegimeDetector().fit(bars)
    assert detector.n_states_ == 2
    assert set(detector.bic_) == {2, 3, 4}
    assert min(detector.bic_, key=detector.bic_.__getitem__) == 2
    labels = np.array(detector.filter(bars).labels)
    truth = market.labels[1:]
    assert np.mean(labels[truth == "volatile"] == "volatile") > 0.9
    assert np.mean(labels[truth == "bull"] != "volatile") > 0.9


def test_bic_picks_four_states_on_four_regime_market(fitted) -> None:
    assert fitted.n_states_ == 4
    assert min(fitted.bic_, key=fitted.bic_.__getitem__) == 4
    assert sorted(fitted.state_labels_) == sorted(REGIME_LABELS)


def test_fit_falls_back_to_threshold_rules_when_every_hmm_fit_fails(monkeypatch, market_bars) -> None:
    def broken_fit(self, X, lengths=None):
        raise ValueError("covars must be symmetric, positive-definite")

    monkeypatch.setattr(GaussianHMM, "fit", broken_fit)
    detector = RegimeDetector(n_restarts=2).fit(market_bars)
    reply = detector.to_response(market_bars)
    assert reply.fallback is True
    assert reply.method_used == METHOD_RULES
    assert "covars must be symmetric" in (reply.fallback_reason or "")
    assert detector.hmm_ is None
    assert all(math.isfinite(f) for f in _floats(reply.model_dump()))
    assert len(reply.labels) == len(market_bars) - 1
    assert {"volatile", "sideways"} <= set(reply.labels)  # the rules still see the calm and the wild


def test_fit_non_converged_is_reported_but_not_a_fallback(market_bars) -> None:
    detector = RegimeDetector(n_states=3, n_iter=2, tol=1e-9).fit(market_bars)
    reply = detector.to_response(market_bars)
    assert reply.converged is False
    assert reply.fallback is False
    assert reply.method_used == METHOD_HMM


def test_fit_constant_prices_returns_finite_fallback_reply() -> None:
    bars = _constant_bars()
    detector = RegimeDetector().fit(bars)
    reply = detector.to_response(bars)
    assert reply.fallback is True
    assert reply.method_used == METHOD_RULES
    assert "constant" in (reply.fallback_reason or "")
    assert set(reply.labels) == {"sideways"}
    assert all(math.isfinite(f) for f in _floats(reply.model_dump()))


def test_fit_close_only_data_uses_log_return_and_says_so(market) -> None:
    bars = market.bars.head(800)
    close_only = OHLCV("C", bars.timestamps, bars.close, bars.close, bars.close, bars.close, bars.volume)
    b = _bars(close_only)
    detector = RegimeDetector().fit(b)
    assert detector.method_used_ == METHOD_HMM
    assert detector.features_ == ("log_return",)
    assert detector.fallback_ is True
    assert "range" in (detector.fallback_reason_ or "")


def test_from_parts_reproduces_labels_after_json_roundtrip(fitted, market_bars) -> None:
    metadata = json.loads(json.dumps(fitted.to_metadata()))
    rebuilt = RegimeDetector.from_parts(fitted.hmm_, metadata)
    a, b = fitted.filter(market_bars), rebuilt.filter(market_bars)
    assert a.labels == b.labels
    np.testing.assert_allclose(a.state_probs, b.state_probs)
    assert rebuilt.to_response(market_bars) == fitted.to_response(market_bars)


def test_from_parts_names_stored_states_by_todays_rule(fitted, market_bars) -> None:
    # a model stored before a falling state stopped being called bull: its state names are stored with it
    metadata = json.loads(json.dumps(fitted.to_metadata()))
    calm = int(np.argmin(fitted.state_volatility_))
    metadata["state_mean_return_"][calm] = -abs(metadata["state_mean_return_"][calm])  # the calm state fell
    metadata["state_labels_"][calm] = "bull"
    rebuilt = RegimeDetector.from_parts(fitted.hmm_, metadata)
    assert rebuilt.state_labels_[calm] != "bull"
    assert all(label != "bull" or m > 0 for label, m in zip(rebuilt.state_labels_, rebuilt.state_mean_return_,
                                                           strict=True))


def test_trend_reading_only_moves_calm_labels_to_bear_on_bear_trend_bars() -> None:
    # a calm rise, then a fall of 0.3 % a day at the same volatility: one calm state holds both
    rng = np.random.default_rng(5)
    n, top = 550, 350
    ret = rng.normal(np.where(np.arange(n) < top, 0.0006, -0.003), 0.01)
    close = 100.0 * np.exp(np.cumsum(ret))
    open_ = close * np.exp(-0.5 * ret)
    spread = np.exp(np.abs(rng.normal(0.0, 0.01, n)))
    times = np.busday_offset(np.datetime64("2001-01-02", "D"), np.arange(n), roll="forward").astype("datetime64[ns]")
    bars = _bars(OHLCV("SLOW", times, open_, np.maximum(open_, close) * spread, np.minimum(open_, close) / spread,
                       close, np.full(n, 1e6)))
    detector = RegimeDetector(n_states=2, n_restarts=1).fit(bars)
    read = detector.filter(bars)
    plain = RegimeDetector.from_parts(detector.hmm_, {**detector.to_metadata(), "params": {
        **detector.get_params(), "trend_reading": False}}).filter(bars)
    assert read.trend_applied and not plain.trend_applied
    assert plain.labels == plain.filter_labels == read.filter_labels
    np.testing.assert_array_equal(read.state_probs, plain.state_probs)  # the filter itself is the same
    bear = read.trend.bear
    assert 0 < bear.sum() < len(bear)
    assert any(b in ("bull", "sideways") for b in np.asarray(plain.labels)[bear])  # the reading has work to do
    for j, (a, b) in enumerate(zip(read.labels, plain.labels, strict=True)):
        if not bear[j] or b in ("bear", "volatile"):
            assert a == b
        else:
            assert a == "bear" or (a == "volatile" and b != "volatile")


def test_from_parts_reproduces_threshold_rules(monkeypatch, market_bars) -> None:
    monkeypatch.setattr(GaussianHMM, "fit", lambda self, X, lengths=None: (_ for _ in ()).throw(ValueError("nan")))
    fallback = RegimeDetector(n_restarts=1).fit(market_bars)
    rebuilt = RegimeDetector.from_parts(None, json.loads(json.dumps(fallback.to_metadata())))
    assert rebuilt.filter(market_bars).labels == fallback.filter(market_bars).labels


def test_from_parts_rejects_mismatched_hmm(fitted) -> None:
    other = GaussianHMM(n_components=2)
    other.n_features = 1
    other.startprob_ = np.array([0.5, 0.5])
    other.transmat_ = np.full((2, 2), 0.5)
    other.means_ = np.zeros((2, 1))
    other.covars_ = np.ones((2, 1))
    with pytest.raises(ValueError, match="metadata expects"):
        RegimeDetector.from_parts(other, fitted.to_metadata())


def test_to_response_is_consistent_and_finite(fitted, market_bars) -> None:
    reply = fitted.to_response(market_bars, model_id="m1", model_version=3)
    n = len(market_bars) - 1
    assert len(reply.timestamps) == len(reply.labels) == len(reply.states) == n
    assert reply.timestamps[0] == market_bars.iso()[1]
    assert reply.as_of == market_bars.as_of and reply.data_hash == market_bars.data_hash
    assert (reply.model_id, reply.model_version, reply.seed) == ("m1", 3, 0)
    probs = np.array([reply.label_probabilities[label] for label in REGIME_LABELS])
    np.testing.assert_allclose(probs.sum(axis=0), 1.0)
    np.testing.assert_allclose(np.sum(reply.state_probabilities, axis=1), 1.0)
    np.testing.assert_allclose(np.sum(reply.transition_matrix, axis=1), 1.0)
    assert reply.current_label == reply.labels[-1]
    assert reply.current_probability == pytest.approx(reply.label_probabilities[reply.current_label][-1])
    assert sum(s.occupancy for s in reply.state_info) == pytest.approx(1.0)
    for info in reply.state_info:
        assert info.expected_duration == pytest.approx(1 / (1 - reply.transition_matrix[info.state][info.state]))
        assert info.label == fitted.state_labels_[info.state]
    assert all(math.isfinite(f) for f in _floats(reply.model_dump()))


def test_fit_state_statistics_are_in_daily_return_units(fitted, market) -> None:
    by_label = dict(zip(fitted.state_labels_, fitted.state_volatility_, strict=True))
    for label, vol in by_label.items():
        assert vol == pytest.approx(market.params[label].sigma, rel=0.15)


def test_accuracy_on_synthetic_market_is_close_to_oracle(fitted, market, market_bars) -> None:
    _, oracle = oracle_filter(market)
    truth = market.labels[1:]
    detector_acc = np.mean(np.array(fitted.filter(market_bars).labels) == truth)
    oracle_acc = np.mean(oracle == truth)
    assert detector_acc >= 0.9 * oracle_acc
    assert detector_acc > 0.8


def test_fit_rejects_unknown_feature(market_bars) -> None:
    with pytest.raises(ValueError, match="features"):
        RegimeDetector(features=("volume",)).fit(market_bars)


def test_filter_before_fit_raises_not_fitted(market_bars) -> None:
    with pytest.raises(NotFittedError, match="not fitted"):
        RegimeDetector().filter(market_bars)


def test_fit_filter_equals_fit_then_filter(market) -> None:
    bars = _bars(market.bars.head(400))
    once = RegimeDetector(n_states=3, n_restarts=1)
    filtering = once.fit_filter(bars)
    again = RegimeDetector(n_states=3, n_restarts=1).fit(bars).filter(bars)
    assert filtering.labels == again.labels
    np.testing.assert_array_equal(filtering.state_probs, again.state_probs)
    assert once.to_response(bars, filtering=filtering) == once.to_response(bars)


def test_to_artifact_stores_the_hmm_with_json_metadata(fitted) -> None:
    artifact = fitted.to_artifact()
    assert artifact.fmt == "skops" and artifact.obj is fitted.hmm_ and artifact.method == METHOD_HMM
    assert json.loads(json.dumps(artifact.metadata)) == artifact.metadata


def test_to_artifact_of_the_rules_fallback_is_all_json() -> None:
    detector = RegimeDetector().fit(_constant_bars())
    artifact = detector.to_artifact()
    assert (artifact.fmt, artifact.obj, artifact.method) == ("json", None, METHOD_RULES)


def test_to_artifact_before_fit_raises_not_fitted() -> None:
    with pytest.raises(NotFittedError):
        RegimeDetector().to_artifact()


def test_from_artifact_rebuilds_the_same_labels(fitted, market_bars) -> None:
    info = ModelInfo(model_id="regime-1", name="r", version=1, family="regime", method=METHOD_HMM, sha256="0" * 64,
                     created_at=datetime.now(UTC), stage="full", metadata=json.loads(json.dumps(fitted.to_metadata())))
    rebuilt = RegimeDetector.from_artifact(fitted.hmm_, info)
    assert rebuilt.filter(market_bars).labels == fitted.filter(market_bars).labels
