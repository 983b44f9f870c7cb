"""Bandit policies: convergence, explanations, exact state round trips, non-stationary adaptation, params."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from quantcrew.ml_server.schemas.bandit import BANDIT_POLICIES, BanditParams
from quantcrew.ml_server.services.bandit.exp3 import EXP3
from quantcrew.ml_server.services.bandit.params import ParamError, PolicyParams
from quantcrew.ml_server.services.bandit.policies import POLICIES, make_policy, restore_policy
from quantcrew.ml_server.services.bandit.policy import BanditPolicy
from quantcrew.ml_server.services.bandit.simulation import simulate


def _play(policy: BanditPolicy, means: list[float], rounds: int, rng: np.random.Generator) -> list[int]:
    arms = []
    for _ in range(rounds):
        arm = policy.select(rng)
        policy.update(arm, float(rng.random() < means[arm]), rng)
        arms.append(arm)
    return arms


def test_policy_names_match_the_wire_contract() -> None:
    assert tuple(POLICIES) == BANDIT_POLICIES
    assert set(PolicyParams.__dataclass_fields__) == set(BanditParams.model_fields)
    assert PolicyParams().to_dict() == BanditParams().model_dump(mode="json") | {"reward_range": [0.0, 1.0]}


@pytest.mark.parametrize("name", POLICIES)
def test_select_converges_to_best_arm_on_clear_case(name: str) -> None:
    result = simulate(name, [0.2, 0.8, 0.3], 2000, seed=1)
    share = result.pulls[1] / 2000
    assert share > (0.7 if name == "exp3" else 0.95), result.pulls


@pytest.mark.parametrize("name", POLICIES)
def test_explain_is_finite_and_consistent(name: str) -> None:
    rng = np.random.default_rng(3)
    policy = make_policy(name, 4, {"reward_range": [-1.0, 1.0]})
    _play(policy, [0.1, 0.6, 0.4, 0.3], 300, rng)
    policy.select(rng)
    stats = policy.explain()
    assert len(stats) == 4
    assert sum(s.raw_pulls for s in stats) == policy.total_pulls == 300
    for s in stats:
        for value in (s.estimate, s.uncertainty, s.score, s.mean_reward):
            assert value is None or math.isfinite(value)
        assert s.uncertainty is None or s.uncertainty >= 0.0
        assert s.pulls <= s.raw_pulls + 1e-9
    if name in ("ucb1", "sliding_window_ucb"):  # the index compared is estimate + bonus
        for s in stats:
            if s.score is not None:
                assert s.estimate is not None and s.uncertainty is not None
                assert s.score == pytest.approx(s.estimate + s.uncertainty)
    if name == "exp3":
        assert sum(s.score or 0.0 for s in stats) == pytest.approx(1.0)
    if name in ("thompson_beta", "ucb1"):
        assert all(s.pulls == s.raw_pulls for s in stats)
    if name != "exp3":  # rewards in {0, 1} sit inside [-1, 1]: estimates stay within it
        assert all(s.estimate is None or -1.0 <= s.estimate <= 1.0 for s in stats)


@pytest.mark.parametrize("name", POLICIES)
def test_state_round_trip_continues_identically(name: str) -> None:
    rng = np.random.default_rng(11)
    policy = make_policy(name, 3, {"window": 50, "discount": 0.97})
    _play(policy, [0.3, 0.5, 0.6], 200, rng)
    saved = json.loads(json.dumps(policy.to_state()))
    clone = restore_policy(saved)
    assert type(clone) is type(policy)
    assert clone.to_state() == policy.to_state()
    assert clone.explain() == policy.explain()
    rng_state = rng.bit_generator.state
    rng_clone = np.random.default_rng()
    rng_clone.bit_generator.state = rng_state
    assert _play(policy, [0.3, 0.5, 0.6], 150, rng) == _play(clone, [0.3, 0.5, 0.6], 150, rng_clone)
    assert clone.to_state() == policy.to_state()


def test_restore_policy_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="not a saved bandit policy state"):
        restore_policy({"policy": "ucb1"})


def test_exp3_probabilities_sum_to_one_and_follow_rewards() -> None:
    rng = np.random.default_rng(0)
    policy = make_policy("exp3", 5, {"gamma": 0.1})
    assert isinstance(policy, EXP3)
    assert policy.probabilities() == pytest.approx([0.2] * 5)
    _play(policy, [0.1, 0.1, 0.9, 0.1, 0.1], 2000, rng)
    probs = policy.probabilities()
    assert sum(probs) == pytest.approx(1.0)
    assert min(probs) >= 0.1 / 5 - 1e-12  # the gamma floor
    assert int(np.argmax(probs)) == 2


def test_exp3_default_gamma_follows_horizon() -> None:
    policy = make_policy("exp3", 5, {"horizon": 10_000})
    assert isinstance(policy, EXP3)
    assert policy.gamma == pytest.approx(math.sqrt(5 * math.log(5) / ((math.e - 1) * 10_000)))


def test_exp3_update_uses_propensity_given() -> None:
    a, b = make_policy("exp3", 2, {"gamma": 0.5}), make_policy("exp3", 2, {"gamma": 0.5})
    a.update(0, 1.0, propensity=0.5)
    b.update(0, 1.0, propensity=0.25)
    assert isinstance(a, EXP3) and isinstance(b, EXP3)
    assert b.probabilities()[0] > a.probabilities()[0] > 0.5
    with pytest.raises(ValueError, match="propensity"):
        a.update(0, 1.0, propensity=0.0)


@pytest.mark.parametrize(("adaptive", "stationary"),
                         [("discounted_thompson", "thompson_beta"), ("sliding_window_ucb", "ucb1")])
def test_nonstationary_policy_adapts_after_change_point_faster(adaptive: str, stationary: str) -> None:
    schedule = [(0, [0.8, 0.2]), (2000, [0.2, 0.8])]

    def regret_after_change(name: str) -> float:
        runs = [simulate(name, schedule, 3000, seed=s) for s in range(3)]
        return float(np.mean([r.regret[-1] - r.regret[1999] for r in runs]))

    assert regret_after_change(adaptive) < 0.5 * regret_after_change(stationary)


def test_sliding_window_forgets_arms_out_of_window() -> None:
    policy = make_policy("sliding_window_ucb", 2, {"window": 10})
    for _ in range(3):
        policy.update(0, 1.0)
    for _ in range(10):
        policy.update(1, 0.5)
    stats = policy.explain()
    assert stats[0].pulls == 0 and stats[0].raw_pulls == 3 and stats[0].estimate is None
    assert stats[1].pulls == 10 and stats[1].estimate == pytest.approx(0.5)
    assert policy.select(np.random.default_rng(0)) == 0  # no reward in the window: played again


def test_discounted_thompson_counts_decay() -> None:
    policy = make_policy("discounted_thompson", 2, {"discount": 0.5})
    policy.update(0, 1.0)
    policy.update(1, 0.0)
    stats = policy.explain()
    assert stats[0].pulls == pytest.approx(0.5) and stats[1].pulls == pytest.approx(1.0)
    assert stats[0].raw_pulls == stats[1].raw_pulls == 1


def test_ucb1_plays_every_arm_once_first() -> None:
    policy = make_policy("ucb1", 4)
    rng = np.random.default_rng(0)
    first = []
    for _ in range(4):
        arm = policy.select(rng)
        first.append(arm)
        policy.update(arm, 0.0)
    assert sorted(first) == [0, 1, 2, 3]


def test_hoeffding_bonus_is_textbook_ucb1() -> None:
    policy = make_policy("ucb1", 2, {"ucb_bonus": "hoeffding", "c": 1.0})
    for arm, reward in [(0, 1.0), (1, 0.0), (0, 0.0)]:
        policy.update(arm, reward)
    stats = policy.explain()
    assert stats[0].uncertainty == pytest.approx(math.sqrt(2 * math.log(3) / 2))
    assert stats[1].uncertainty == pytest.approx(math.sqrt(2 * math.log(3) / 1))


def test_reward_range_rescales_and_clips() -> None:
    policy = make_policy("ucb1", 2, {"reward_range": [-0.05, 0.05]})
    policy.update(0, 0.02)
    policy.update(1, 0.5)  # far above the range: clipped to 0.05
    stats = policy.explain()
    assert stats[0].estimate == pytest.approx(0.02)
    assert stats[1].estimate == pytest.approx(0.05) and stats[1].mean_reward == pytest.approx(0.5)
    assert policy.clipped == 1 and policy.would_clip(0.5) and not policy.would_clip(0.0)


def test_gaussian_thompson_rescales_without_clipping() -> None:
    policy = make_policy("thompson_gaussian", 2, {"reward_range": [0.0, 10.0]})
    for _ in range(200):
        policy.update(0, 20.0)
    assert policy.clipped == 0 and not policy.would_clip(20.0)
    assert policy.explain()[0].estimate == pytest.approx(20.0, rel=0.01)


def test_beta_fractional_reward_is_a_bernoulli_trial() -> None:
    policy = make_policy("thompson_beta", 2)
    with pytest.raises(ValueError, match="random generator"):
        policy.update(0, 0.3)
    assert policy.total_pulls == 0  # a refused update leaves no trace
    rng = np.random.default_rng(5)
    for _ in range(2000):
        policy.update(0, 0.3, rng)
    stats = policy.explain()[0]
    assert stats.estimate == pytest.approx(0.3, abs=0.03)
    assert stats.mean_reward == pytest.approx(0.3)


def test_pseudo_regret_from_empirical_means() -> None:
    policy = make_policy("ucb1", 3)
    for arm, reward in [(0, 1.0), (0, 1.0), (1, 0.0), (1, 0.0), (1, 0.0), (2, 0.5)]:
        policy.update(arm, reward)
    assert policy.pseudo_regret() == pytest.approx(2 * 0.0 + 3 * 1.0 + 1 * 0.5)
    assert make_policy("ucb1", 3).pseudo_regret() == 0.0


@pytest.mark.parametrize(("params", "param"), [
    ({"c": -1.0}, "c"),
    ({"c": float("nan")}, "c"),
    ({"ucb_bonus": "wild"}, "ucb_bonus"),
    ({"gamma": 0.0}, "gamma"),
    ({"gamma": 1.5}, "gamma"),
    ({"horizon": 0}, "horizon"),
    ({"discount": 0.0}, "discount"),
    ({"discount": 1.01}, "discount"),
    ({"window": 0}, "window"),
    ({"window": 2.5}, "window"),
    ({"reward_range": [1.0, 1.0]}, "reward_range"),
    ({"reward_range": [0.0]}, "reward_range"),
    ({"prior_alpha": 0.0}, "prior_alpha"),
    ({"prior_beta": -2.0}, "prior_beta"),
    ({"temperature": 1.0}, "temperature"),
])
def test_bad_param_raises_naming_it(params: dict[str, Any], param: str) -> None:
    with pytest.raises(ParamError, match=param) as info:
        make_policy("ucb1", 3, params)
    assert info.value.param == param


def test_unknown_policy_lists_valid_ones() -> None:
    with pytest.raises(ParamError, match="thompson_beta") as info:
        make_policy("greedy", 3)
    assert info.value.param == "policy"


@pytest.mark.parametrize(("arm", "reward", "match"), [(3, 1.0, "arm"), (-1, 1.0, "arm"), (0, float("inf"), "finite")])
def test_update_refuses_bad_arm_or_reward(arm: int, reward: float, match: str) -> None:
    policy = make_policy("ucb1", 3)
    with pytest.raises(ValueError, match=match):
        policy.update(arm, reward)


def test_single_arm_policy_always_plays_it() -> None:
    for name in POLICIES:
        policy = make_policy(name, 1)
        rng = np.random.default_rng(0)
        assert _play(policy, [0.5], 20, rng) == [0] * 20
