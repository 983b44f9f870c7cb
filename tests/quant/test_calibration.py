"""Calibration metrics, temperature scaling, ensemble uncertainty and mixture weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.quant.calibration import (
    Uncertainty,
    brier_score,
    expected_calibration_error,
    fit_mixture_weights,
    fit_temperature,
    mean_probs,
    negative_log_likelihood,
    reliability_bins,
    softmax,
    uncertainty,
)

# four rows, three classes: confidences 0.7 / 0.6 / 0.6 / 0.9, right, wrong, right, wrong
_PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]])
_LABELS = np.array([0, 2, 2, 1])


def _draw_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row, drawn from that row's distribution."""
    u = rng.random((len(probs),))
    drawn = (u[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)
    return np.asarray(np.minimum(drawn, probs.shape[1] - 1))


# --- softmax / mean_probs ----------------------------------------------------------------------


def test_softmax_is_stable_and_tempered() -> None:
    p = softmax(np.array([[1000.0, 1000.0, 0.0], [1.0, 2.0, 3.0]]))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0], atol=1e-12)
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(p[1], e / e.sum())
    np.testing.assert_allclose(softmax(np.array([2.0, 4.0]), temperature=2.0), softmax(np.array([1.0, 2.0])))


def test_mean_probs_weights_members() -> None:
    logits = np.random.default_rng(0).normal(size=(3, 5, 4))
    w = np.array([1.0, 0.0, 3.0])
    expected = (softmax(logits[0] / 1.5) + 3 * softmax(logits[2] / 1.5)) / 4
    np.testing.assert_allclose(mean_probs(logits, 1.5, w), expected)
    np.testing.assert_allclose(mean_probs(logits), softmax(logits).mean(axis=0))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: softmax(np.zeros((2, 3)), temperature=0.0), "temperature"),
        (lambda: softmax(np.zeros((2, 3)), temperature=-1.0), "temperature"),
        (lambda: softmax(np.zeros((0, 3))), "logits"),
        (lambda: mean_probs(np.zeros((4, 3))), "logits"),
        (lambda: mean_probs(np.zeros((2, 4, 3)), weights=np.ones(3)), "weights"),
        (lambda: mean_probs(np.zeros((2, 4, 3)), weights=np.array([1.0, -1.0])), "weights"),
        (lambda: mean_probs(np.full((2, 4, 3), np.inf)), "logits"),
    ],
)
def test_probability_helpers_bad_input_raise(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]


# --- metrics ------------------------------------------------------------------------------------


def test_metrics_match_hand_computation() -> None:
    # bins of width 0.25: rows 0-2 in (0.5, 0.75] (conf 0.6333, acc 2/3), row 3 in (0.75, 1] (conf 0.9, acc 0)
    ece = 3 / 4 * abs(2 / 3 - 1.9 / 3) + 1 / 4 * 0.9
    assert expected_calibration_error(_PROBS, _LABELS, bins=4) == pytest.approx(ece)
    assert ece == pytest.approx(0.25)
    # Brier: 0.14 + 0.86 + 0.24 + 1.715
    assert brier_score(_PROBS, _LABELS) == pytest.approx(2.955 / 4)
    nll = -(math.log(0.7) + math.log(0.3) + math.log(0.6) + math.log(0.05)) / 4
    assert negative_log_likelihood(_PROBS, _LABELS) == pytest.approx(nll)


def test_reliability_bins_hand_example() -> None:
    bins = reliability_bins(_PROBS, _LABELS, bins=4)
    assert len(bins) == 2
    assert bins[0] == pytest.approx({"lo": 0.5, "hi": 0.75, "count": 3, "confidence": 1.9 / 3, "accuracy": 2 / 3})
    assert bins[1] == pytest.approx({"lo": 0.75, "hi": 1.0, "count": 1, "confidence": 0.9, "accuracy": 0.0})
    assert isinstance(bins[0]["count"], int)


def test_nll_clips_zero_probability() -> None:
    probs = np.array([[1.0, 0.0], [0.5, 0.5]])
    assert negative_log_likelihood(probs, np.array([1, 0])) == pytest.approx((-math.log(1e-12) + math.log(2)) / 2)


def test_ece_of_calibrated_probs_is_near_zero() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=200_000)
    labels = _draw_labels(probs, rng)
    assert expected_calibration_error(probs, labels) < 0.01
    bins = reliability_bins(probs, labels)
    assert sum(b["count"] for b in bins) == 200_000
    assert all(abs(b["accuracy"] - b["confidence"]) < 0.03 for b in bins if b["count"] > 2000)


def test_ece_of_overconfident_probs_is_large() -> None:
    rng = np.random.default_rng(1)
    true = rng.dirichlet([1.0, 1.0, 1.0], size=50_000)
    labels = _draw_labels(true, rng)
    sharp = softmax(3.0 * np.log(true))  # same ranking, far more confident
    assert expected_calibration_error(sharp, labels) > 0.1
    assert expected_calibration_error(sharp, labels) > 5 * expected_calibration_error(true, labels)
    assert negative_log_likelihood(sharp, labels) > negative_log_likelihood(true, labels)
    assert brier_score(sharp, labels) > brier_score(true, labels)


@pytest.mark.parametrize(
    ("probs", "labels", "match"),
    [
        (_PROBS, np.array([0, 2, 3, 1]), "labels"),
        (_PROBS, np.array([0, 2, -1, 1]), "labels"),
        (_PROBS, np.array([0, 2, 2]), "labels"),
        (_PROBS, np.array([0.0, 2.5, 2.0, 1.0]), "labels"),
        (_PROBS * 2, _LABELS, "probs"),
        (_PROBS[:, :1], _LABELS, "probs"),
        (np.zeros((0, 3)), np.zeros(0, np.int64), "probs"),
    ],
)
def test_metrics_bad_input_raise(probs: np.ndarray, labels: np.ndarray, match: str) -> None:
    for metric in (expected_calibration_error, brier_score, negative_log_likelihood, reliability_bins):
        with pytest.raises(ValueError, match=match):
            metric(probs, labels)


def test_metrics_accept_integral_float_labels() -> None:
    assert brier_score(_PROBS, _LABELS.astype(float)) == brier_score(_PROBS, _LABELS)


# --- temperature --------------------------------------------------------------------------------


def test_fit_temperature_recovers_two() -> None:
    rng = np.random.default_rng(2)
    true_logits = 1.5 * rng.normal(size=(20_000, 3))
    labels = _draw_labels(softmax(true_logits), rng)
    t = fit_temperature(2.0 * true_logits, labels)
    assert t == pytest.approx(2.0, abs=0.1)
    # the same answer for one member given as (1, N, C), and it is a minimum of the NLL
    assert fit_temperature(2.0 * true_logits[None], labels) == pytest.approx(t, rel=1e-9)

    def nll(temp: float) -> float:
        return negative_log_likelihood(softmax(2.0 * true_logits, temp), labels)

    assert nll(t) <= min(nll(t * 1.02), nll(t / 1.02))


def test_fit_temperature_of_ensemble_members_and_bounds() -> None:
    rng = np.random.default_rng(3)
    true_logits = rng.normal(size=(5_000, 3))
    labels = _draw_labels(softmax(true_logits), rng)
    members = 4.0 * true_logits[None] + 0.1 * rng.normal(size=(3, 5_000, 3))
    t = fit_temperature(members, labels)
    assert 3.0 < t < 5.0
    assert fit_temperature(members, labels, bounds=(0.1, 2.0)) == pytest.approx(2.0, rel=1e-3)


@pytest.mark.parametrize(
    ("logits", "labels", "bounds", "match"),
    [
        (np.zeros((4, 3)), np.array([0, 1, 2, 3]), (0.05, 20.0), "labels"),
        (np.zeros((4, 3)), np.array([0, 1, 2]), (0.05, 20.0), "labels"),
        (np.zeros((4, 3)), np.array([0, 1, 2, 0]), (0.0, 20.0), "bounds"),
        (np.zeros((4, 3)), np.array([0, 1, 2, 0]), (3.0, 2.0), "bounds"),
        (np.zeros((2, 2, 4, 3)), np.array([0, 1, 2, 0]), (0.05, 20.0), "logits"),
    ],
)
def test_fit_temperature_bad_input_raise(
    logits: np.ndarray, labels: np.ndarray, bounds: tuple[float, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        fit_temperature(logits, labels, bounds=bounds)


# --- uncertainty --------------------------------------------------------------------------------


def test_uncertainty_identical_members_agree_fully() -> None:
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    u = uncertainty(np.stack([p, p, p]))
    assert isinstance(u, Uncertainty)
    np.testing.assert_allclose(u.probs, p)
    np.testing.assert_allclose(u.agreement_score, [1.0, 1.0])
    np.testing.assert_allclose(u.consensus_strength, [0.6, 0.6])
    np.testing.assert_allclose(u.divergence_metric, [0.0, 0.0], atol=1e-12)
    h = -(0.6 * math.log(0.6) + 0.3 * math.log(0.3) + 0.1 * math.log(0.1)) / math.log(3)
    np.testing.assert_allclose(u.predictive_entropy[0], h)


def test_uncertainty_opposite_one_hot_two_classes() -> None:
    u = uncertainty(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]))
    np.testing.assert_allclose(u.agreement_score, [0.5])
    np.testing.assert_allclose(u.consensus_strength, [0.5])
    np.testing.assert_allclose(u.divergence_metric, [1.0])
    np.testing.assert_allclose(u.predictive_entropy, [1.0])


def test_uncertainty_opposite_one_hot_three_classes() -> None:
    u = uncertainty(np.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]]))
    # mean (0.5, 0.5, 0): H = log 2, members' entropies 0 -> MI = log 2, over log 3
    np.testing.assert_allclose(u.agreement_score, [0.5])
    np.testing.assert_allclose(u.divergence_metric, [math.log(2) / math.log(3)])
    np.testing.assert_allclose(u.predictive_entropy, [math.log(2) / math.log(3)])


def test_uncertainty_weights() -> None:
    members = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    u = uncertainty(members, weights=np.array([3.0, 1.0]))
    np.testing.assert_allclose(u.probs, [[0.75, 0.25]])
    np.testing.assert_allclose(u.agreement_score, [0.75])
    np.testing.assert_allclose(u.consensus_strength, [0.75])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    np.testing.assert_allclose(u.divergence_metric, [h])


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 6), n=st.integers(1, 5), c=st.integers(2, 4), seed=st.integers(0, 2**32 - 1))
def test_uncertainty_reductions_are_the_weighted_sums_over_members(k: int, n: int, c: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    members = rng.dirichlet(np.full(c, 0.7), size=(k, n))
    raw = rng.uniform(0.1, 3.0, size=k)
    u = uncertainty(members, weights=raw)
    w = raw / raw.sum()
    mean = sum(w[j] * members[j] for j in range(k))
    chosen = mean.argmax(axis=1)

    def entropy(p: np.ndarray) -> np.ndarray:
        return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)

    np.testing.assert_allclose(u.probs, mean, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(u.agreement_score, sum(w[j] * (members[j].argmax(axis=1) == chosen) for j in range(k)),
                               atol=1e-12)
    np.testing.assert_allclose(u.consensus_strength, sum(w[j] * members[j][np.arange(n), chosen] for j in range(k)),
                               atol=1e-12)
    mutual = entropy(mean) - sum(w[j] * entropy(members[j]) for j in range(k))
    np.testing.assert_allclose(u.divergence_metric, np.clip(mutual / math.log(c), 0.0, 1.0), atol=1e-12)


def test_uncertainty_metrics_stay_in_unit_interval() -> None:
    rng = np.random.default_rng(4)
    u = uncertainty(rng.dirichlet([0.3, 0.3, 0.3], size=(5, 1000)))
    for values in (u.agreement_score, u.consensus_strength, u.divergence_metric, u.predictive_entropy):
        assert values.shape == (1000,)
        assert values.min() >= 0.0
        assert values.max() <= 1.0
    assert np.all(u.divergence_metric <= u.predictive_entropy + 1e-12)  # MI <= H(mean)


@pytest.mark.parametrize(
    ("member_probs", "weights", "match"),
    [
        (np.full((2, 3), 1 / 3), None, "member_probs"),
        (np.full((2, 4, 3), 0.5), None, "member_probs"),
        (np.full((2, 4, 3), 0.3), None, "sum to 1"),  # rows of 0.9: every entry in [0, 1]
        (np.array([[[0.5, 0.5, np.nan]]]), None, "member_probs"),
        (np.full((2, 4, 3), 1 / 3), np.ones(3), "weights"),
        (np.full((2, 4, 3), 1 / 3), np.zeros(2), "weights"),
    ],
)
def test_uncertainty_bad_input_raise(member_probs: np.ndarray, weights: np.ndarray | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        uncertainty(member_probs, weights)


# --- mixture weights ----------------------------------------------------------------------------


def test_fit_mixture_weights_prefers_better_source() -> None:
    rng = np.random.default_rng(5)
    true = rng.dirichlet([0.5, 0.5, 0.5], size=5_000)
    labels = _draw_labels(true, rng)
    noisy = rng.dirichlet([1.0, 1.0, 1.0], size=5_000)  # knows nothing
    w = fit_mixture_weights([noisy, true], labels)
    assert w.shape == (2,)
    assert w.sum() == pytest.approx(1.0)
    assert w[1] >= 0.8
    assert np.allclose(w / 0.05, np.round(w / 0.05))  # on the grid


def test_fit_mixture_weights_one_source_and_ties() -> None:
    labels = _LABELS
    np.testing.assert_allclose(fit_mixture_weights([_PROBS], labels), [1.0])
    np.testing.assert_allclose(fit_mixture_weights([_PROBS, _PROBS], labels), [0.5, 0.5])
    np.testing.assert_allclose(fit_mixture_weights([_PROBS, _PROBS, _PROBS], labels, step=1 / 3), [1 / 3] * 3)


def test_fit_mixture_weights_three_sources_beats_every_single_source() -> None:
    rng = np.random.default_rng(6)
    true = rng.dirichlet([0.5, 0.5, 0.5], size=4_000)
    labels = _draw_labels(true, rng)
    sources = [
        softmax(np.log(true) + rng.normal(scale=1.0, size=true.shape)),
        softmax(np.log(true) + rng.normal(scale=1.0, size=true.shape)),
        np.full_like(true, 1 / 3),
    ]
    w = fit_mixture_weights(sources, labels, step=0.1)
    mixed = sum(wk * s for wk, s in zip(w, sources, strict=True))
    assert negative_log_likelihood(mixed, labels) <= min(negative_log_likelihood(s, labels) for s in sources)
    assert w[0] > 0.2
    assert w[1] > 0.2


@pytest.mark.parametrize(
    ("probs", "step", "match"),
    [
        ([], 0.05, "at least one"),
        ([_PROBS, _PROBS[:3]], 0.05, r"probs\[1\]"),
        ([_PROBS, _PROBS], 0.3, "step"),
        ([_PROBS, _PROBS], 0.0, "step"),
        ([_PROBS, _PROBS * 3], 0.05, r"probs\[1\]"),
    ],
)
def test_fit_mixture_weights_bad_input_raise(probs: list[np.ndarray], step: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_mixture_weights(probs, _LABELS if not probs or probs[0].shape[0] == 4 else _LABELS[:3], step=step)
