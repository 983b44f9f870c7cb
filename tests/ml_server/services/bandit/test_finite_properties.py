"""Property: no sequence of accepted rewards drives any policy to a non-finite figure or an invalid arm."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.config.settings import ServerSettings
from quantcrew.ml_server.services.bandit.params import REWARD_LIMIT, PolicyParams
from quantcrew.ml_server.services.bandit.policies import POLICIES, make_policy, restore_policy
from quantcrew.ml_server.services.bandit.policy import BanditPolicy

_SERVER_BOUND = ServerSettings().max_abs_reward

# The edges are what overflowed before: rewards at the bound, their alternation and tiny ones.
_EDGES = [REWARD_LIMIT, -REWARD_LIMIT, _SERVER_BOUND, -_SERVER_BOUND, 0.0, 5e-324, -5e-324, 1.0, -1.0]
_REWARDS = st.one_of(st.sampled_from(_EDGES), st.floats(-REWARD_LIMIT, REWARD_LIMIT, allow_nan=False),
                     st.floats(-_SERVER_BOUND, _SERVER_BOUND, allow_nan=False))
_SEQUENCES = st.one_of(
    st.lists(_REWARDS, min_size=1, max_size=60),
    st.lists(st.sampled_from([REWARD_LIMIT, -REWARD_LIMIT]), min_size=2, max_size=60),  # alternating extremes
)
# Default, return-sized, very narrow and widest reward ranges: rescaling must not overflow either.
_RANGES = st.sampled_from([(0.0, 1.0), (-0.05, 0.05), (0.0, 1e-300), (-REWARD_LIMIT, REWARD_LIMIT)])


def _assert_finite(policy: BanditPolicy) -> None:
    for stats in policy.explain():
        for value in (stats.estimate, stats.uncertainty, stats.pulls, stats.score, stats.mean_reward):
            assert value is None or math.isfinite(value), stats
    assert math.isfinite(policy.pseudo_regret())
    assert policy.is_finite()
    json.dumps(policy.to_state(), allow_nan=False)  # what the store saves


@pytest.mark.parametrize("name", POLICIES)
@settings(max_examples=40, deadline=None)
@given(rewards=_SEQUENCES, n_arms=st.integers(2, 6), reward_range=_RANGES,
       discount=st.sampled_from([0.5, 0.998, 1.0]), window=st.sampled_from([1, 3, 500]),
       gamma=st.sampled_from([None, 1e-6, 0.5, 1.0]), seed=st.integers(0, 2**32 - 1))
def test_policy_stays_finite_and_chooses_valid_arms_for_any_accepted_rewards(
        name: str, rewards: list[float], n_arms: int, reward_range: tuple[float, float], discount: float,
        window: int, gamma: float | None, seed: int) -> None:
    params = PolicyParams(reward_range=reward_range, discount=discount, window=window, gamma=gamma)
    policy = make_policy(name, n_arms, params)
    rng = np.random.default_rng(seed)
    for reward in rewards:
        arm = policy.select(rng)
        assert isinstance(arm, int) and 0 <= arm < n_arms
        policy.update(arm, reward, rng, propensity=policy.propensity(arm))
        _assert_finite(policy)
    restored = restore_policy(json.loads(json.dumps(policy.to_state())))
    assert restored.is_finite() and 0 <= restored.select(rng) < n_arms


@pytest.mark.parametrize("name", POLICIES)
def test_reward_beyond_the_policy_limit_is_refused(name: str) -> None:
    policy = make_policy(name, 2)
    with pytest.raises(ValueError, match="within"):
        policy.update(0, 1e160, np.random.default_rng(0))
    assert policy.total_pulls == 0 and policy.is_finite()


def test_reward_range_beyond_the_policy_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="reward_range"):
        PolicyParams(reward_range=(-1e308, 1e308))


def test_exp3_tiny_propensity_keeps_log_weights_finite() -> None:
    policy = make_policy("exp3", 3)
    for _ in range(50):
        policy.update(0, 1.0, propensity=5e-324)
    _assert_finite(policy)
