"""Stable-baselines3 policies as registry adapters: trained, stored as state dicts, rebuilt, asked.

:class:`PolicyModel` follows scikit-learn's estimator contract: the algorithm, action mode,
observation size, network and training settings are given to ``__init__``;
:meth:`PolicyModel.fit` trains the policy with stable-baselines3 on a vectorised environment and
returns the model; what it learned lives in attributes ending in ``_``.

A trained policy is stored as its ``state_dict`` (tensors only) and rebuilt from the
architecture recorded in its metadata, so loading runs ``torch.load(weights_only=True)`` and
nothing else: no pickled SB3 model, no zip with code in it. The optimiser state is not kept
(a stored policy answers; it is not trained further).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import torch
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.dqn.policies import DQNPolicy

from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.rl import ACTION_LABELS
from quantcrew.ml_server.services.adapter import Artifact, NotFittedError

__all__ = [
    "ENT_COEF",
    "NET_ARCH",
    "PolicyAnswer",
    "PolicyModel",
    "action_space",
    "build_algorithm",
    "observation_space",
    "policy_state",
]

NET_ARCH: tuple[int, ...] = (64, 64)
ENT_COEF = 0.01
"""Entropy bonus of PPO and A2C unless a request chooses another."""
ALGORITHMS = ("ppo", "a2c", "dqn")


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


def build_algorithm(algorithm: str, env: VecEnv, *, seed: int, learning_rate: float | None, n_envs: int,
                    net_arch: tuple[int, ...] = NET_ARCH, ent_coef: float | None = None) -> BaseAlgorithm:
    """The SB3 algorithm with this project's defaults (small MLPs, CPU, fixed seed).

    PPO collects 2048 transitions per update whatever ``n_envs`` is and learns from minibatches
    of 256 (fewer, larger gradient steps than SB3's 64: the same learning on these small
    networks for a third of the time); DQN does one gradient step per 4 transitions, as SB3's
    Atari defaults, with a 50,000-transition buffer. PPO and A2C add an entropy bonus of
    ``ent_coef`` (default :data:`ENT_COEF`); DQN has none (its exploration is epsilon-greedy).
    """
    common: dict[str, Any] = {"seed": seed, "device": "cpu", "verbose": 0}
    if learning_rate is not None:
        common["learning_rate"] = learning_rate
    entropy = ENT_COEF if ent_coef is None else float(ent_coef)
    if algorithm == "ppo":
        return PPO("MlpPolicy", env, n_steps=max(2048 // n_envs, 64), batch_size=256, n_epochs=10, gamma=0.9,
                   ent_coef=entropy, policy_kwargs={"net_arch": {"pi": list(net_arch), "vf": list(net_arch)}},
                   **common)
    if algorithm == "a2c":
        return A2C("MlpPolicy", env, n_steps=8, gamma=0.9, ent_coef=entropy,
                   policy_kwargs={"net_arch": {"pi": list(net_arch), "vf": list(net_arch)}}, **common)
    if algorithm == "dqn":
        return DQN("MlpPolicy", env, buffer_size=50_000, learning_starts=1_000, batch_size=64, gamma=0.9,
                   train_freq=max(4 // n_envs, 1), gradient_steps=1, target_update_interval=1_000,
                   exploration_fraction=0.2, exploration_final_eps=0.02,
                   policy_kwargs={"net_arch": list(net_arch)}, **common)
    raise ValueError(f"unknown algorithm {algorithm!r}; valid: ppo, a2c, dqn")


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


class PolicyModel:
    """A trading policy answering one observation at a time on the CPU.

    Args:
        algorithm: ``ppo``, ``a2c`` or ``dqn``.
        action_mode: ``discrete`` or ``continuous`` (``dqn`` is discrete only).
        obs_dim: Length of the observation vector.
        net_arch: Hidden layer sizes.
        seed: Fixes the initial weights and the exploration of :meth:`fit`.
        learning_rate: The algorithm's learning rate (SB3's default when None).
        ent_coef: PPO and A2C's entropy bonus (:data:`ENT_COEF` when None; DQN has none).

    Attributes:
        state_: The trained policy's tensors (what the registry stores).
        policy_: The policy rebuilt from ``state_``, in eval mode.

    Raises:
        ValueError: an unknown algorithm or action mode, or ``dqn`` with continuous actions.
    """

    family: ClassVar[str] = "rl"

    state_: dict[str, torch.Tensor]
    policy_: BasePolicy

    def __init__(self, *, algorithm: str, action_mode: str, obs_dim: int, net_arch: tuple[int, ...] = NET_ARCH,
                 seed: int = 0, learning_rate: float | None = None, ent_coef: float | None = None) -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}; valid: {', '.join(ALGORITHMS)}")
        if action_mode not in ("discrete", "continuous"):
            raise ValueError(f"unknown action mode {action_mode!r}; valid: discrete, continuous")
        if algorithm == "dqn" and action_mode != "discrete":
            raise ValueError("a dqn policy chooses discrete actions only")
        self.algorithm = algorithm
        self.action_mode = action_mode
        self.obs_dim = int(obs_dim)
        self.net_arch = tuple(int(w) for w in net_arch)
        self.seed = seed
        self.learning_rate = learning_rate
        self.ent_coef = ent_coef

    def fit(self, env: VecEnv, *, timesteps: int, callback: BaseCallback | None = None) -> Self:
        """Train on ``env`` for ``timesteps`` steps; ``callback`` may report progress and stop early.

        The trained weights are kept as a state dict and the answering policy rebuilt from it,
        exactly as a stored policy is rebuilt from the registry.
        """
        algo = build_algorithm(self.algorithm, env, seed=self.seed, learning_rate=self.learning_rate,
                               n_envs=env.num_envs, net_arch=self.net_arch, ent_coef=self.ent_coef)
        algo.learn(total_timesteps=timesteps, callback=callback)
        self._set_state(policy_state(algo.policy))
        return self

    def load_state(self, state: Mapping[str, torch.Tensor]) -> Self:
        """Answer with these trained weights (a state dict of this architecture), as :meth:`fit` leaves it.

        Raises:
            ValueError: the tensors do not fit the policy.
        """
        self._set_state(state)
        return self

    def _set_state(self, state: Mapping[str, torch.Tensor]) -> None:
        obs_space, act_space = observation_space(self.obs_dim), action_space(self.action_mode)
        policy: BasePolicy
        if self.algorithm == "dqn":
            assert isinstance(act_space, gym.spaces.Discrete)  # __init__ allows dqn with discrete actions only
            policy = DQNPolicy(obs_space, act_space, _zero_schedule, net_arch=list(self.net_arch))
        else:
            policy = ActorCriticPolicy(obs_space, act_space, _zero_schedule,
                                       net_arch=dict(pi=list(self.net_arch), vf=list(self.net_arch)))
        try:
            policy.load_state_dict(dict(state), strict=True)
        except RuntimeError as exc:
            raise ValueError(f"stored weights do not fit a {self.algorithm} policy on {self.obs_dim} inputs: "
                             f"{exc}") from exc
        policy.set_training_mode(False)
        self.state_, self.policy_ = dict(state), policy

    def _check_fitted(self) -> None:
        if not hasattr(self, "policy_"):
            raise NotFittedError("this PolicyModel is not fitted: call fit, or rebuild a stored one")

    # -- the registry side -------------------------------------------------------------------

    def to_artifact(self) -> Artifact:
        """The policy's state dict; the architecture it needs to be rebuilt as metadata."""
        self._check_fitted()
        return Artifact(obj=self.state_, fmt="torch", method=self.algorithm, metadata={
            "algorithm": self.algorithm, "action_mode": self.action_mode, "net_arch": list(self.net_arch),
            "obs_dim": self.obs_dim})

    @classmethod
    def from_artifact(cls, obj: Any, info: ModelInfo, **context: Any) -> Self:
        """The stored policy, rebuilt from its state dict and the architecture in its metadata.

        Raises:
            KeyError: the metadata lacks the algorithm, action mode, observation size or network.
            ValueError: they are malformed, or the tensors do not fit them.
        """
        if not isinstance(obj, Mapping):
            raise ValueError(f"an rl artifact is a state dict, not a {type(obj).__name__}")
        meta = info.metadata
        model = cls(algorithm=meta["algorithm"], action_mode=meta["action_mode"], obs_dim=int(meta["obs_dim"]),
                    net_arch=tuple(meta["net_arch"]))
        model._set_state(obj)
        return model

    # -- answering ---------------------------------------------------------------------------

    @torch.no_grad()
    def answer(self, obs: npt.NDArray[np.float32]) -> PolicyAnswer:
        """The deterministic action for one observation, with the policy's own uncertainty."""
        self._check_fitted()
        x = torch.as_tensor(obs, dtype=torch.float32).reshape(1, -1)
        if isinstance(self.policy_, DQNPolicy):
            q = self.policy_.q_net(x)[0].numpy().astype(np.float64)
            a = int(np.argmax(q))
            return PolicyAnswer(a, ACTION_LABELS[a], float(a - 1), None,
                                {lbl: float(v) for lbl, v in zip(ACTION_LABELS, q, strict=True)}, None)
        assert isinstance(self.policy_, ActorCriticPolicy)
        dist = self.policy_.get_distribution(x).distribution
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

    @torch.no_grad()
    def target_positions(self, obs: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """The deterministic target position for each row of ``obs`` (one batched forward pass).

        The same positions as :meth:`answer` row by row: the argmax of the action probabilities
        (or Q-values) of a discrete policy, the clipped mean weight of a continuous one.
        """
        self._check_fitted()
        x = torch.as_tensor(obs, dtype=torch.float32).reshape(obs.shape[0], -1)
        if isinstance(self.policy_, DQNPolicy):
            q: npt.NDArray[np.float64] = self.policy_.q_net(x).argmax(dim=1).numpy().astype(np.float64)
            return q - 1.0
        assert isinstance(self.policy_, ActorCriticPolicy)
        dist = self.policy_.get_distribution(x).distribution
        if self.action_mode == "discrete":
            assert isinstance(dist, torch.distributions.Categorical)
            return dist.probs.argmax(dim=1).numpy().astype(np.float64) - 1.0
        assert isinstance(dist, torch.distributions.Distribution)
        return np.clip(dist.mean[:, 0].numpy().astype(np.float64), -1.0, 1.0)
