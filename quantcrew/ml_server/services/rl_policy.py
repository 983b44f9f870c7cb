"""Stable-baselines3 policies as plain state dicts: build, store, rebuild, ask.

A trained policy is stored as its ``state_dict`` (tensors only) and rebuilt from the
architecture recorded in its metadata, so loading runs ``torch.load(weights_only=True)`` and
nothing else: no pickled SB3 model, no zip with code in it. The optimiser state is not kept
(a stored policy answers; it is not trained further).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.dqn.policies import DQNPolicy

from quantcrew.ml_server.schemas.rl import ACTION_LABELS

__all__ = ["NET_ARCH", "PolicyAnswer", "StoredPolicy", "action_space", "observation_space", "policy_state"]

NET_ARCH: tuple[int, ...] = (64, 64)


def observation_space(dim: int) -> gym.spaces.Box:
    """The observation space of a policy seeing ``dim`` features (scaled features + position)."""
    return gym.spaces.Box(low=-np.inf, high=np.inf, shape=(dim,), dtype=np.float32)


def action_space(mode: str) -> gym.spaces.Space[Any]:
    """Discrete(3) (short, flat, long) or a target weight in [-1, 1]."""
    if mode == "discrete":
        return gym.spaces.Discrete(3)
    return gym.spaces.Box(low=-1.0, high=1.0, shape=(1,), dtype=np.float32)


def policy_state(policy: BasePolicy) -> dict[str, torch.Tensor]:
    """The policy's tensors, detached and on the CPU: what the registry stores."""
    return {k: v.detach().cpu().clone() for k, v in policy.state_dict().items()}


def _zero_schedule(_: float) -> float:
    return 0.0


@dataclass(frozen=True)
class PolicyAnswer:
    """What one policy says about one observation."""

    action: int | float
    label: str
    target_position: float
    probabilities: dict[str, float] | None
    q_values: dict[str, float] | None
    action_std: float | None


class StoredPolicy:
    """A policy rebuilt from its state dict, answering one observation at a time on the CPU.

    Args:
        algorithm: ``ppo``, ``a2c`` or ``dqn``.
        action_mode: ``discrete`` or ``continuous``.
        obs_dim: Length of the observation vector.
        state: The stored state dict.
        net_arch: Hidden layer sizes used at training.

    Raises:
        ValueError: the state dict does not fit the architecture (wrong or missing tensors).
    """

    def __init__(self, *, algorithm: str, action_mode: str, obs_dim: int, state: Mapping[str, torch.Tensor],
                 net_arch: tuple[int, ...] = NET_ARCH) -> None:
        self.algorithm = algorithm
        self.action_mode = action_mode
        obs_space, act_space = observation_space(obs_dim), action_space(action_mode)
        policy: BasePolicy
        if algorithm == "dqn":
            assert isinstance(act_space, gym.spaces.Discrete)
            policy = DQNPolicy(obs_space, act_space, _zero_schedule, net_arch=list(net_arch))
        else:
            policy = ActorCriticPolicy(obs_space, act_space, _zero_schedule,
                                       net_arch=dict(pi=list(net_arch), vf=list(net_arch)))
        try:
            policy.load_state_dict(dict(state), strict=True)
        except RuntimeError as exc:
            raise ValueError(f"stored weights do not fit a {algorithm} policy on {obs_dim} inputs: {exc}") from exc
        policy.set_training_mode(False)
        self.policy = policy

    @torch.no_grad()
    def answer(self, obs: npt.NDArray[np.float32]) -> PolicyAnswer:
        """The deterministic action for one observation, with the policy's own uncertainty."""
        x = torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)
        if isinstance(self.policy, DQNPolicy):
            q = self.policy.q_net(x)[0].numpy().astype(np.float64)
            a = int(np.argmax(q))
            return PolicyAnswer(a, ACTION_LABELS[a], float(a - 1), None,
                                {lbl: float(v) for lbl, v in zip(ACTION_LABELS, q, strict=True)}, None)
        assert isinstance(self.policy, ActorCriticPolicy)
        dist = self.policy.get_distribution(x).distribution
        assert isinstance(dist, torch.distributions.Distribution)
        if self.action_mode == "discrete":
            assert isinstance(dist, torch.distributions.Categorical)
            probs = dist.probs[0].numpy().astype(np.float64)
            a = int(np.argmax(probs))
            return PolicyAnswer(a, ACTION_LABELS[a], float(a - 1),
                                {lbl: float(p) for lbl, p in zip(ACTION_LABELS, probs, strict=True)}, None, None)
        mean = float(dist.mean[0, 0])
        weight = float(np.clip(mean, -1.0, 1.0))
        return PolicyAnswer(weight, "weight", weight, None, None, float(dist.stddev[0, 0]))
