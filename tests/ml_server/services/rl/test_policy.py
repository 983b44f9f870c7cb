"""The policy adapter: estimator contract, registry round trip, one cache per registry, 409s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from quantcrew.ml_server.errors import ArtifactIntegrityError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.adapter import NotFittedError
from quantcrew.ml_server.services.rl import service
from quantcrew.ml_server.services.rl.env import TradingEnv
from quantcrew.ml_server.services.rl.policy import PolicyModel
from quantcrew.ml_server.services.rl.rewards import make_reward

FEATURES = 4


def _registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts", cache_size=4)


def _env(action_mode: Any = "discrete") -> DummyVecEnv:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(120, FEATURES)).astype(np.float32)
    forward = rng.normal(0.0, 0.01, size=120)
    return DummyVecEnv([lambda: TradingEnv(features, forward, make_reward("aggressive"), start=0, end=100,
                                           action_mode=action_mode, episode_length=50)])


def _fitted(algorithm: str = "a2c", action_mode: str = "discrete") -> PolicyModel:
    policy = PolicyModel(algorithm=algorithm, action_mode=action_mode, obs_dim=FEATURES + 1, seed=1)
    return policy.fit(_env(action_mode), timesteps=64)


@pytest.fixture(scope="module")
def fitted() -> PolicyModel:
    return _fitted()


def _obs() -> np.ndarray:
    return np.linspace(-1.0, 1.0, FEATURES + 1).astype(np.float32)


def test_unfitted_policy_raises_not_fitted_error() -> None:
    policy = PolicyModel(algorithm="ppo", action_mode="discrete", obs_dim=3)
    with pytest.raises(NotFittedError, match="not fitted"):
        policy.answer(np.zeros(3, dtype=np.float32))
    with pytest.raises(NotFittedError):
        policy.to_artifact()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"algorithm": "sac", "action_mode": "discrete"}, "algorithm"),
    ({"algorithm": "ppo", "action_mode": "sideways"}, "action mode"),
    ({"algorithm": "dqn", "action_mode": "continuous"}, "discrete"),
])
def test_bad_configuration_is_refused_at_init(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PolicyModel(obs_dim=3, **kwargs)  # type: ignore[arg-type]


def test_fit_returns_the_policy_with_its_state(fitted: PolicyModel) -> None:
    assert isinstance(fitted, PolicyModel) and fitted.state_
    answer = fitted.answer(_obs())
    assert answer.label in ("short", "flat", "long") and answer.probabilities is not None


def test_store_and_rebuild_give_the_same_answers(tmp_path: Path, fitted: PolicyModel) -> None:
    registry = _registry(tmp_path)
    info = adapter.store(registry, fitted, name="spx-aggressive-a2c", metadata={"agent": "aggressive"})
    assert info.family == "rl" and info.method == "a2c"
    assert info.metadata["obs_dim"] == FEATURES + 1 and info.metadata["agent"] == "aggressive"
    rebuilt, got = service.load_policy(registry, info.model_id)
    assert got.model_id == info.model_id
    assert rebuilt.answer(_obs()) == fitted.answer(_obs())
    assert all(torch.equal(rebuilt.state_[k], v) for k, v in fitted.state_.items())


def test_rebuilt_policy_lives_in_the_registry_cache_of_its_app(tmp_path: Path, fitted: PolicyModel) -> None:
    one, two = _registry(tmp_path), _registry(tmp_path)
    info = adapter.store(one, fitted, name="p")
    first, _ = service.load_policy(one, info.model_id)
    assert service.load_policy(one, info.model_id)[0] is first
    assert one.is_cached(info.model_id) and not two.is_cached(info.model_id)
    assert service.load_policy(two, info.model_id)[0] is not first


def test_continuous_policy_answers_a_weight_with_its_spread() -> None:
    answer = _fitted(action_mode="continuous").answer(_obs())
    assert answer.label == "weight" and -1.0 <= answer.target_position <= 1.0
    assert answer.action_std is not None and answer.action_std > 0


def test_weights_for_another_architecture_are_a_409(tmp_path: Path, fitted: PolicyModel) -> None:
    registry = _registry(tmp_path)
    artifact = fitted.to_artifact()
    info = registry.save(family="rl", name="p", method="a2c", obj=artifact.obj, fmt="torch",
                         metadata={**artifact.metadata, "obs_dim": FEATURES + 3})
    with pytest.raises(ArtifactIntegrityError, match="cannot be rebuilt"):
        service.load_policy(registry, info.model_id)


def test_metadata_without_the_algorithm_is_a_409(tmp_path: Path, fitted: PolicyModel) -> None:
    registry = _registry(tmp_path)
    artifact = fitted.to_artifact()
    meta = {k: v for k, v in artifact.metadata.items() if k != "algorithm"}
    info = registry.save(family="rl", name="p", method="a2c", obj=artifact.obj, fmt="torch", metadata=meta)
    with pytest.raises(ArtifactIntegrityError):
        service.load_policy(registry, info.model_id)
