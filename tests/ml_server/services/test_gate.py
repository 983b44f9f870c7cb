"""Quality gates on hand-made series whose verdict is known: RL policies, the ensemble, the execution network."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from quantcrew.ml_server.schemas.gate import GateVerdict
from quantcrew.ml_server.services.gate import (
    MIN_REGIME_BARS,
    challenger_decision,
    challenger_gate,
    diebold_mariano,
    ensemble_gate,
    execution_gate,
    failed_checks_text,
    regime_measure,
    rl_policy_gate,
)
from quantcrew.quant.performance import max_drawdown, performance_of_returns, sharpe_ratio

_SPAN: dict[str, Any] = {"span_start": "2017-01-03", "span_end": "2018-12-31"}


@pytest.fixture(scope="module")
def market() -> np.ndarray:
    """500 daily returns of a market that rises on average (buy-and-hold Sharpe well above 0)."""
    return np.random.default_rng(11).normal(0.0008, 0.01, 500)


def _drawdown(returns: np.ndarray) -> float:
    return max_drawdown(np.cumprod(1.0 + returns), initial=1.0)


def _rl(returns: np.ndarray, positions: np.ndarray, market: np.ndarray, **kw: Any) -> GateVerdict:
    fields: dict[str, Any] = {
        "strategy_returns": returns, "positions": positions, "buy_hold_returns": market, "specialty": "max drawdown",
        "specialty_value": _drawdown(returns), "buy_hold_specialty_value": _drawdown(market),
        "higher_is_better": False, "rule": "momentum rule for conservative", **_SPAN,
    }
    fields.update(kw)
    return rl_policy_gate(**fields)


def _check(verdict: GateVerdict, name: str) -> Any:
    return next(c for c in verdict.checks if c.name == name)


# -- RL policies -----------------------------------------------------------------------------------


def test_a_policy_that_never_trades_fails_though_its_drawdown_is_smaller(market: np.ndarray) -> None:
    verdict = _rl(np.zeros(500), np.zeros(500), market)
    assert not verdict.passed
    assert _check(verdict, "specialty_above_buy_and_hold").passed  # what "beats B&H" used to read
    held = _check(verdict, "position_held")
    assert not held.passed and held.value == 0.0 and held.baseline_value == 0.10
    assert not _check(verdict, "sharpe_above_flat").passed
    assert not _check(verdict, "sharpe_above_buy_and_hold").passed
    assert verdict.summary.startswith("failed: ") and "position held on 0% of bars <= 10%" in verdict.summary
    assert "momentum rule for conservative stands in" in verdict.summary
    assert verdict.rule == "momentum rule for conservative" and verdict.n == 500
    assert (verdict.span_start, verdict.span_end) == ("2017-01-03", "2018-12-31")


def test_a_policy_held_on_just_under_a_tenth_of_the_bars_fails_that_check(market: np.ndarray) -> None:
    positions = np.zeros(500)
    positions[:49] = 1.0  # 9.8% of the bars
    assert not _check(_rl(positions * market, positions, market), "position_held").passed
    positions[49] = 1.0  # exactly 10%
    assert _check(_rl(positions * market, positions, market), "position_held").passed


def test_buy_and_hold_itself_fails_the_sharpe_above_buy_and_hold_check(market: np.ndarray) -> None:
    verdict = _rl(market.copy(), np.ones(500), market)
    sharpe = _check(verdict, "sharpe_above_buy_and_hold")
    assert not verdict.passed and not sharpe.passed and sharpe.value == sharpe.baseline_value
    assert _check(verdict, "position_held").passed and _check(verdict, "sharpe_above_flat").passed
    assert verdict.interval == (0.0, 0.0)  # the same returns on every resample
    assert f"Sharpe after costs {sharpe.value:.2f} <= buy-and-hold {sharpe.value:.2f}" in verdict.summary


def test_a_strongly_better_policy_passes_with_an_interval_above_zero(market: np.ndarray) -> None:
    positions = np.sign(market)  # long before rises, short before falls: far better than holding
    returns = positions * market - 0.0002 * np.abs(np.diff(positions, prepend=0.0))
    verdict = _rl(returns, positions, market)
    assert verdict.passed and all(c.passed for c in verdict.checks)
    assert verdict.interval is not None and 0.0 < verdict.interval[0] <= verdict.interval[1]
    sharpe = _check(verdict, "sharpe_above_buy_and_hold")
    diff = sharpe.value - sharpe.baseline_value
    assert verdict.interval[0] <= diff <= verdict.interval[1]
    assert verdict.summary.startswith("passed: Sharpe after costs ") and " > buy-and-hold " in verdict.summary
    assert "stands in" not in verdict.summary and failed_checks_text(verdict) == "passed"


def test_a_better_sharpe_with_a_worse_specialty_fails(market: np.ndarray) -> None:
    positions = np.sign(market)
    returns = positions * market
    verdict = _rl(returns, positions, market, specialty="total return", specialty_value=-0.1,
                  buy_hold_specialty_value=0.2, higher_is_better=True)
    assert not verdict.passed
    assert [c.name for c in verdict.checks if not c.passed] == ["specialty_above_buy_and_hold"]
    assert failed_checks_text(verdict) == "total return -0.10 <= buy-and-hold 0.20"


def test_a_specialty_not_measurable_on_the_span_fails(market: np.ndarray) -> None:
    positions = np.sign(market)
    verdict = _rl(positions * market, positions, market, specialty="return in sideways regimes",
                  specialty_value=None, buy_hold_specialty_value=None, higher_is_better=True)
    check = _check(verdict, "specialty_above_buy_and_hold")
    assert not verdict.passed and not check.passed and check.value is None
    assert "return in sideways regimes not measurable on these bars" in verdict.summary


def test_the_rl_verdict_is_the_same_for_the_same_seed_and_round_trips_as_json(market: np.ndarray) -> None:
    positions = np.where(np.arange(500) % 7 < 3, 1.0, 0.0)
    first, second = (_rl(positions * market, positions, market, seed=5) for _ in range(2))
    assert first == second
    assert GateVerdict.model_validate(first.model_dump(mode="json")) == first
    assert all(math.isfinite(v) for v in first.interval or ())


def test_the_sharpe_is_the_backtests_sharpe(market: np.ndarray) -> None:
    verdict = _rl(market * 0.5, np.full(500, 0.5), market)
    assert _check(verdict, "sharpe_above_buy_and_hold").baseline_value == pytest.approx(
        performance_of_returns(market, periods_per_year=252).sharpe)


def test_ragged_or_non_finite_rl_series_are_refused(market: np.ndarray) -> None:
    with pytest.raises(ValueError, match="one non-zero length"):
        _rl(np.zeros(499), np.zeros(500), market)
    bad = market.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        _rl(bad, np.zeros(500), market)


# -- RL policies judged in their own regime -------------------------------------------------------

_REGIMES = ("bull", "bear", "sideways", "volatile")
_returns = arrays(np.float64, st.integers(30, 120), elements=st.floats(-0.05, 0.05, allow_nan=False))


def _labels_for(draw: st.DrawFn, n: int) -> list[str]:
    return draw(st.lists(st.sampled_from(_REGIMES), min_size=n, max_size=n))


@st.composite
def _regime_series(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A strategy's returns, buy-and-hold's and one regime label per bar."""
    mine = draw(_returns)
    n = mine.shape[0]
    theirs = draw(arrays(np.float64, n, elements=st.floats(-0.05, 0.05, allow_nan=False)))
    return mine, theirs, _labels_for(draw, n)


_MEASURES = st.sampled_from(["max_drawdown", "total_return", "sharpe"])
_OWN = st.sampled_from([("bear", "volatile"), ("bull",), ("sideways",), None])


@settings(max_examples=150, deadline=None)
@given(_regime_series(), _MEASURES, _OWN, st.data())
def test_the_specialty_is_measured_on_the_regimes_bars_alone(
        series: tuple[np.ndarray, np.ndarray, list[str]], measure: Any, own: tuple[str, ...] | None,
        data: st.DataObject) -> None:
    mine, _, labels = series
    value, n = regime_measure(mine, labels, own, measure, 252)
    kept = mine if own is None else mine[[label in own for label in labels]]
    assert n == kept.shape[0]
    if n < MIN_REGIME_BARS:
        assert value is None
        return
    expected = {"total_return": float(np.prod(1.0 + kept) - 1.0),
                "max_drawdown": max_drawdown(np.cumprod(1.0 + kept), initial=1.0),
                "sharpe": sharpe_ratio(kept, 252)}[measure]
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # what happens on the other regimes' bars does not move it
    other = mine.copy()
    outside = [i for i, label in enumerate(labels) if own is not None and label not in own]
    if outside:
        other[outside] = data.draw(arrays(np.float64, len(outside), elements=st.floats(-0.05, 0.05,
                                                                                       allow_nan=False)))
    assert regime_measure(other, labels, own, measure, 252)[0] == value


@settings(max_examples=40, deadline=None)  # each verdict bootstraps its interval
@given(_regime_series(), _MEASURES, _OWN)
def test_buy_and_hold_never_beats_itself_in_any_regime(series: tuple[np.ndarray, np.ndarray, list[str]],
                                                       measure: Any, own: tuple[str, ...] | None) -> None:
    _, market, labels = series
    verdict = rl_policy_gate(strategy_returns=market, positions=np.ones(market.shape[0]), buy_hold_returns=market,
                             specialty="m", specialty_measure=measure, regime_labels=labels, specialty_regimes=own,
                             **_SPAN)
    assert not _check(verdict, "specialty_above_buy_and_hold").passed and not verdict.passed


@settings(max_examples=40, deadline=None)  # each verdict bootstraps its interval
@given(_regime_series())
def test_a_conservative_policy_flat_in_bear_and_volatile_bars_beats_any_drawdown_there(
        series: tuple[np.ndarray, np.ndarray, list[str]]) -> None:
    _, market, labels = series
    own = ("bear", "volatile")
    positions = np.array([0.0 if label in own else 1.0 for label in labels])
    verdict = rl_policy_gate(strategy_returns=positions * market, positions=positions, buy_hold_returns=market,
                             specialty="max drawdown", specialty_measure="max_drawdown", regime_labels=labels,
                             specialty_regimes=own, **_SPAN)
    check = _check(verdict, "specialty_above_buy_and_hold")
    if check.baseline_value is None:  # too few bear and volatile bars: not measurable, so not passed
        assert check.value is None and not check.passed
    else:
        assert check.value == 0.0 and check.passed == (check.baseline_value > 0.0)
        assert check.measure == "max drawdown in bear/volatile regimes"


def test_the_overall_checks_still_decide_beside_the_regime_specialty(market: np.ndarray) -> None:
    labels = ["bear" if i % 3 == 0 else "bull" for i in range(500)]
    flat = np.zeros(500)
    verdict = rl_policy_gate(strategy_returns=flat, positions=flat, buy_hold_returns=market, specialty="max drawdown",
                             specialty_measure="max_drawdown", regime_labels=labels, specialty_regimes=("bear",),
                             **_SPAN)
    assert _check(verdict, "specialty_above_buy_and_hold").passed  # no drawdown in the bear bars...
    assert not verdict.passed  # ...but a flat book fails the Sharpe and held checks
    assert {c.name for c in verdict.checks if not c.passed} == {"sharpe_above_buy_and_hold", "sharpe_above_flat",
                                                                 "position_held"}


def test_the_specialty_given_both_ways_or_labels_of_another_length_are_refused(market: np.ndarray) -> None:
    with pytest.raises(ValueError, match="not both"):
        _rl(market, np.ones(500), market, specialty_measure="sharpe")
    with pytest.raises(ValueError, match="one regime per return"):
        rl_policy_gate(strategy_returns=market, positions=np.ones(500), buy_hold_returns=market, specialty="m",
                       specialty_measure="sharpe", regime_labels=["bull"] * 499, specialty_regimes=("bull",), **_SPAN)
    with pytest.raises(ValueError, match="higher_is_better"):
        rl_policy_gate(strategy_returns=market, positions=np.ones(500), buy_hold_returns=market, specialty="m",
                       **_SPAN)


# -- the ensemble ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def labels() -> np.ndarray:
    return np.random.default_rng(3).choice(3, size=600, p=[0.3, 0.2, 0.5])


def _ensemble(probs: np.ndarray, labels: np.ndarray, horizon: int = 5) -> GateVerdict:
    freq = np.bincount(labels, minlength=3) / labels.size
    return ensemble_gate(probabilities=probs, labels=labels, train_frequencies=freq, horizon=horizon,
                         rule="trend rule", **_SPAN)


def test_an_ensemble_with_perfect_probabilities_passes(labels: np.ndarray) -> None:
    probs = np.full((600, 3), 0.005)
    probs[np.arange(600), labels] = 0.99
    verdict = _ensemble(probs, labels)
    assert verdict.passed and verdict.gate == "ensemble" and verdict.interval is None
    assert verdict.p_value is not None and verdict.p_value < 1e-6
    loss = _check(verdict, "log_loss_below_class_frequency")
    assert loss.value < 0.02 < loss.baseline_value
    brier = _check(verdict, "brier_score_reported")
    assert brier.passed and brier.value < brier.baseline_value


def test_an_ensemble_that_forecasts_the_class_frequencies_fails(labels: np.ndarray) -> None:
    freq = np.bincount(labels, minlength=3) / labels.size
    verdict = _ensemble(np.tile(freq, (600, 1)), labels)
    assert not verdict.passed and verdict.p_value == 1.0
    loss = _check(verdict, "log_loss_below_class_frequency")
    assert loss.value == pytest.approx(loss.baseline_value) and not loss.passed
    assert verdict.summary.startswith("failed: mean log loss ") and "trend rule stands in" in verdict.summary


def test_a_slightly_better_ensemble_is_not_significant_on_few_rows(labels: np.ndarray) -> None:
    # a small edge on 40 rows: about half of them lean to the right class, the rest to a wrong
    # one; the mean loss is below the baseline's, the test cannot tell it from luck
    rng = np.random.default_rng(4)
    freq = np.bincount(labels, minlength=3) / labels.size
    probs = np.tile(freq, (40, 1))
    hit = rng.random(40) < 0.5
    probs[np.arange(40)[hit], labels[:40][hit]] += 0.05
    probs[np.arange(40)[~hit], (labels[:40][~hit] + 1) % 3] += 0.045
    probs /= probs.sum(axis=1, keepdims=True)
    verdict = _ensemble(probs, labels[:40])
    assert _check(verdict, "log_loss_below_class_frequency").passed
    assert verdict.p_value is not None and 0.05 <= verdict.p_value < 0.5
    assert not verdict.passed and [c.name for c in verdict.checks if not c.passed] == ["diebold_mariano"]


def test_diebold_mariano_p_values_are_one_sided_and_mirror() -> None:
    d = np.random.default_rng(4).normal(-0.05, 0.3, 400)
    p = diebold_mariano(d, lag=5)
    assert 0.0 < p < 0.05
    assert diebold_mariano(-d, lag=5) == pytest.approx(1.0 - p)
    assert diebold_mariano(np.zeros(10), lag=3) == 1.0 and diebold_mariano(np.full(10, -0.1), lag=3) == 0.0


def test_diebold_mariano_newey_west_widens_for_overlapping_labels() -> None:
    # differences that persist over 10 rows (as overlapping 10-bar labels do): the lagged
    # variance is larger, so the same mean is less significant than an iid reading says
    rng = np.random.default_rng(6)
    shocks = rng.normal(0.0, 0.3, 610)
    d = np.convolve(shocks, np.ones(10) / 10, mode="valid")[:600] - 0.02
    assert diebold_mariano(d, lag=10) > diebold_mariano(d, lag=0)


def test_bad_ensemble_input_is_refused(labels: np.ndarray) -> None:
    probs = np.full((600, 3), 1 / 3)
    with pytest.raises(ValueError, match="labels"):
        _ensemble(probs, labels + 1)
    with pytest.raises(ValueError, match="sum to 1"):
        _ensemble(probs * 2, labels)


# -- the execution network -------------------------------------------------------------------------


def test_execution_sizing_no_worse_than_the_rule_passes_and_a_worse_one_fails(market: np.ndarray) -> None:
    rule = market * 0.5
    same = execution_gate(sized_returns=rule.copy(), rule_returns=rule, **_SPAN)
    assert same.passed and same.gate == "execution" and same.interval == (0.0, 0.0)
    noisy = rule + np.random.default_rng(9).normal(-0.001, 0.01, 500)
    worse = execution_gate(sized_returns=noisy, rule_returns=rule, rule="volatility-target sizing", **_SPAN)
    assert not worse.passed and worse.interval is not None and worse.interval[0] < 0.0
    assert worse.summary.startswith("failed: Sharpe of the sized returns ") and " <= rule sizing " in worse.summary
    assert "volatility-target sizing stands in" in worse.summary


# -- champion against challenger -------------------------------------------------------------------


def test_a_clearly_better_challenger_passes_and_a_clearly_worse_one_is_rejected() -> None:
    rng = np.random.default_rng(7)
    champion = rng.gamma(2.0, 0.5, size=300)
    better = champion * 0.6 + rng.normal(0.0, 0.02, size=300).clip(-0.1, 0.1) + 0.05
    worse = champion * 1.4 + 0.05
    good = challenger_gate(champion, better, min_samples=30)
    bad = challenger_gate(champion, worse, min_samples=30)
    assert good.gate == "challenger" and good.passed and challenger_decision(good) == "promote"
    assert good.p_value is not None and good.p_value < 0.05 and good.n == 300
    assert not bad.passed and challenger_decision(bad) == "reject"
    assert "mean loss" in bad.summary and bad.summary.startswith("failed")


def test_too_few_pairs_is_insufficient_and_never_passes_however_good_the_challenger() -> None:
    verdict = challenger_gate([1.0] * 10, [0.0] * 10, min_samples=30)
    assert not verdict.passed and challenger_decision(verdict) == "insufficient"
    assert verdict.p_value is None and verdict.summary.startswith("insufficient: 10 paired losses, 30 required")


def test_ragged_or_non_finite_losses_are_refused() -> None:
    with pytest.raises(ValueError, match="pair up"):
        challenger_gate([1.0, 2.0], [1.0], min_samples=2)
    with pytest.raises(ValueError, match="finite"):
        challenger_gate([1.0, math.nan], [1.0, 2.0], min_samples=2)


_LOSSES = arrays(np.float64, st.integers(40, 200), elements=st.floats(0.0, 10.0, allow_nan=False))


@settings(max_examples=80, deadline=None)
@given(_LOSSES, st.floats(0.01, 0.3))
def test_identical_models_never_pass_and_the_verdict_is_symmetric_in_sign(losses: np.ndarray,
                                                                            alpha: float) -> None:
    """A challenger equal to the champion is never promoted; swapping the two mirrors the p-value."""
    same = challenger_gate(losses, losses.copy(), min_samples=10, alpha=alpha)
    assert not same.passed
    shifted = losses + np.linspace(0.0, 1.0, losses.shape[0])
    forward = challenger_gate(shifted, losses, min_samples=10, alpha=alpha)
    backward = challenger_gate(losses, shifted, min_samples=10, alpha=alpha)
    assert forward.p_value is not None and backward.p_value is not None
    assert forward.p_value + backward.p_value == pytest.approx(1.0, abs=1e-9) or (
        forward.p_value == 0.0 and backward.p_value == 1.0)
    assert not backward.passed  # a challenger with higher losses everywhere never passes


@settings(max_examples=60, deadline=None)
@given(_LOSSES, st.floats(0.05, 2.0))
def test_a_challenger_lower_by_a_constant_always_passes(losses: np.ndarray, gap: float) -> None:
    verdict = challenger_gate(losses + gap, losses, min_samples=10)
    assert verdict.passed and challenger_decision(verdict) == "promote"
