"""Bandit simulation: regret against a (dynamic) oracle, shared noise, schedule checks, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from quantcrew.ml_server.services.bandit.params import ParamError
from quantcrew.ml_server.services.bandit.policies import POLICIES
from quantcrew.ml_server.services.bandit.simulation import normalise_schedule, simulate


class _Always:
    """A chooser that always plays one arm and records what it saw."""

    def __init__(self, arm: int) -> None:
        self.arm = arm
        self.rewards: list[float] = []

    def select(self, rng: np.random.Generator) -> int:
        return self.arm

    def update(self, arm: int, reward: float, rng: np.random.Generator | None = None) -> None:
        self.rewards.append(reward)


@pytest.mark.parametrize("name", POLICIES)
def test_regret_is_zero_with_one_arm(name: str) -> None:
    result = simulate(name, [0.4], 500, seed=2)
    assert result.final_regret == 0.0 and result.pulls == [500]


@pytest.mark.parametrize("name", POLICIES)
def test_regret_is_zero_with_equal_means(name: str) -> None:
    result = simulate(name, [0.5, 0.5, 0.5], 1000, seed=3)
    assert result.final_regret == 0.0 and sum(result.pulls) == 1000


def test_dynamic_oracle_charges_gap_to_current_best() -> None:
    # arm 0 is best for 100 rounds (no regret), then 0.5 behind arm 1 for 100 rounds
    result = simulate(_Always(0), [(0, [0.5, 0.4]), (100, [0.2, 0.7])], 200, seed=0)
    assert result.regret[99] == 0.0
    assert result.final_regret == pytest.approx(50.0)
    assert result.best_arms == [0, 1] and result.change_points == [0, 100]
    assert result.policy == "_Always"


def test_regret_curve_is_cumulative_and_non_decreasing() -> None:
    result = simulate("ucb1", [0.6, 0.4, 0.5], 3000, seed=4)
    assert result.regret.shape == (3000,)
    assert np.all(np.diff(result.regret) >= 0.0)
    gaps = np.array([0.0, 0.2, 0.1])
    assert result.final_regret == pytest.approx(float(gaps @ np.array(result.pulls)))


def test_noise_is_shared_across_policies_and_seeded() -> None:
    a, b = _Always(0), _Always(0)
    simulate(a, [0.3, 0.9], 400, seed=7)
    simulate(b, [0.3, 0.9], 400, seed=7)
    assert a.rewards == b.rewards
    assert np.mean(a.rewards) == pytest.approx(0.3, abs=0.06)
    c = _Always(0)
    simulate(c, [0.3, 0.9], 400, seed=8)
    assert c.rewards != a.rewards
    first, again = simulate("thompson_beta", [0.3, 0.6], 500, seed=1), simulate("thompson_beta", [0.3, 0.6], 500, 1)
    assert first.pulls == again.pulls and np.array_equal(first.regret, again.regret)


def test_gaussian_rewards_have_the_given_mean_and_noise() -> None:
    chooser = _Always(1)
    result = simulate(chooser, [0.0, 2.0], 4000, seed=0, distribution="gaussian", noise_sd=0.5)
    assert np.mean(chooser.rewards) == pytest.approx(2.0, abs=0.03)
    assert np.std(chooser.rewards) == pytest.approx(0.5, abs=0.03)
    assert result.final_regret == 0.0


def test_thompson_gaussian_learns_gaussian_arms() -> None:
    result = simulate("thompson_gaussian", [0.1, 0.3, 0.2], 2000, seed=0, distribution="gaussian", noise_sd=0.2)
    assert result.pulls[1] > 1600


@pytest.mark.parametrize(("means", "rounds", "match"), [
    ([], 10, "empty"),
    ([(5, [0.1, 0.2])], 10, "start at round 0"),
    ([(0, [0.1, 0.2]), (0, [0.2, 0.1])], 10, "not after"),
    ([(0, [0.1, 0.2]), (5, [0.2])], 10, "every phase needs 2"),
    ([(0, [0.1, 0.2]), (10, [0.2, 0.1])], 10, "past the last round"),
    ([0.5, 1.5], 10, r"\[0, 1\]"),
    ([0.5, float("nan")], 10, "non-finite"),
])
def test_bad_schedule_raises(means: list, rounds: int, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=match):
        normalise_schedule(means, rounds)


def test_bad_rounds_or_params_raise() -> None:
    with pytest.raises(ValueError, match="rounds"):
        simulate("ucb1", [0.1, 0.2], 0)
    with pytest.raises(ParamError, match="window"):
        simulate("sliding_window_ucb", [0.1, 0.2], 10, params={"window": 0})
    with pytest.raises(ValueError, match="noise_sd"):
        simulate("ucb1", [0.1, 0.2], 10, distribution="gaussian", noise_sd=-1.0)


def test_ten_thousand_rounds_run_well_under_a_second() -> None:
    start = time.perf_counter()
    simulate("thompson_beta", [0.5, 0.45, 0.4, 0.35, 0.3], 10_000, seed=0)
    assert time.perf_counter() - start < 1.0
