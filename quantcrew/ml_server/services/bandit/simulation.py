"""Bandit simulations with known arm means: cumulative (pseudo-)regret against the best arm.

Regret at round t is ``max_b mu_b(t) - mu_{a_t}(t)``, the gap of the arm played to the best arm
of the phase that round falls in (a dynamic oracle when the means change), summed over rounds.
It is the expected regret of the choices made, so it does not depend on the reward noise drawn.

The environment draws one uniform number per round (Bernoulli arms: reward = 1 when it falls
below the played arm's mean) or one standard normal (Gaussian arms: mean + noise_sd * z), from a
stream seeded by ``seed`` and independent of the policy's choices, so every policy (and any
other bandit library driven through :func:`simulate`) meets the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.services.bandit.params import PolicyParams
from quantcrew.ml_server.services.bandit.policies import make_policy

__all__ = ["Chooser", "Distribution", "SimulationResult", "environment_rngs", "normalise_schedule", "simulate"]

Distribution = Literal["bernoulli", "gaussian"]
Schedule = list[tuple[int, list[float]]]


class Chooser(Protocol):
    """Anything :func:`simulate` can drive: a :class:`BanditPolicy`, or an adapter around
    another library's bandit (the bench wraps MABWiser this way)."""

    def select(self, rng: np.random.Generator) -> int: ...

    def update(self, arm: int, reward: float, rng: np.random.Generator | None = None) -> None: ...


@dataclass(frozen=True)
class SimulationResult:
    """Outcome of one simulated run.

    Attributes:
        policy: Policy name (or the chooser's class name).
        rounds: Rounds played.
        regret: Cumulative pseudo-regret after each round, shape (rounds,).
        pulls: Times each arm was played.
        best_arms: Best arm of each phase.
        change_points: First round of each phase (0 first).
        mean_reward: Average reward actually drawn.
    """

    policy: str
    rounds: int
    regret: npt.NDArray[np.float64]
    pulls: list[int]
    best_arms: list[int]
    change_points: list[int]
    mean_reward: float

    @property
    def final_regret(self) -> float:
        """Cumulative regret after the last round."""
        return float(self.regret[-1])


def environment_rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent (environment, policy) generators for ``seed``."""
    env, policy = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(env), np.random.default_rng(policy)


def normalise_schedule(means: Sequence[float] | Sequence[tuple[int, Sequence[float]]], rounds: int,
                       distribution: Distribution = "bernoulli") -> Schedule:
    """Turn fixed means or ``[(start_round, means), ...]`` into a checked schedule.

    Raises:
        ValueError: Empty means, ragged phases, starts not 0 / increasing / below ``rounds``,
            a non-finite mean, or a Bernoulli mean outside [0, 1].
    """
    if not means:
        raise ValueError("means must not be empty")
    first = means[0]
    if isinstance(first, int | float):
        phases: Schedule = [(0, [float(m) for m in means])]  # type: ignore[arg-type]
    else:
        phases = [(int(start), [float(m) for m in mu]) for start, mu in means]  # type: ignore[misc]
    if phases[0][0] != 0:
        raise ValueError(f"schedule must start at round 0, not {phases[0][0]}")
    n_arms = len(phases[0][1])
    for i, (start, mu) in enumerate(phases):
        if len(mu) != n_arms or not mu:
            raise ValueError(f"schedule[{i}] has {len(mu)} means; every phase needs {n_arms} (one per arm)")
        if i and start <= phases[i - 1][0]:
            raise ValueError(f"schedule[{i}] starts at round {start}, not after round {phases[i - 1][0]}")
        if start >= rounds:
            raise ValueError(f"schedule[{i}] starts at round {start}, past the last round ({rounds - 1})")
        if not all(math.isfinite(m) for m in mu):
            raise ValueError(f"schedule[{i}] has a non-finite mean")
        if distribution == "bernoulli" and not all(0.0 <= m <= 1.0 for m in mu):
            raise ValueError(f"schedule[{i}]: Bernoulli means must lie in [0, 1], got {mu}")
    return phases


def simulate(policy: str | Chooser, means: Sequence[float] | Sequence[tuple[int, Sequence[float]]], rounds: int,
             seed: int = 0, params: PolicyParams | dict[str, Any] | None = None, *,
             distribution: Distribution = "bernoulli", noise_sd: float = 0.1) -> SimulationResult:
    """Play ``rounds`` rounds against arms of known (possibly piecewise-constant) means.

    Args:
        policy: A name from ``POLICIES`` (built with ``params``) or a ready :class:`Chooser`.
        means: One mean per arm, or a schedule ``[(start_round, means), ...]`` starting at 0.
        rounds: Rounds to play (>= 1).
        seed: Seeds the environment's noise and the policy's generator (independently).
        params: Policy parameters when ``policy`` is a name.
        distribution: "bernoulli" rewards in {0, 1}, or "gaussian" rewards mean + noise_sd * z.
        noise_sd: Standard deviation of the Gaussian rewards.

    Raises:
        ValueError: Bad rounds / schedule / noise; ParamError (a ValueError) for bad params.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    if distribution not in ("bernoulli", "gaussian"):
        raise ValueError(f"distribution must be 'bernoulli' or 'gaussian', got {distribution!r}")
    if distribution == "gaussian" and not (math.isfinite(noise_sd) and noise_sd >= 0.0):
        raise ValueError(f"noise_sd must be a finite number >= 0, got {noise_sd}")
    phases = normalise_schedule(means, rounds, distribution)
    n_arms = len(phases[0][1])
    chooser: Chooser = make_policy(policy, n_arms, params) if isinstance(policy, str) else policy
    env_rng, rng = environment_rngs(seed)
    noise = (env_rng.random(rounds) if distribution == "bernoulli" else env_rng.standard_normal(rounds)).tolist()
    bernoulli = distribution == "bernoulli"
    regret = np.empty(rounds, dtype=np.float64)
    pulls = [0] * n_arms
    best_arms: list[int] = []
    cum = total = 0.0
    for i, (start, mu) in enumerate(phases):
        end = phases[i + 1][0] if i + 1 < len(phases) else rounds
        best = max(mu)
        best_arms.append(mu.index(best))
        gaps = [best - m for m in mu]
        for t in range(start, end):
            arm = chooser.select(rng)
            u = noise[t]
            reward = (1.0 if u < mu[arm] else 0.0) if bernoulli else mu[arm] + noise_sd * u
            chooser.update(arm, reward, rng)
            pulls[arm] += 1
            total += reward
            cum += gaps[arm]
            regret[t] = cum
    name = policy if isinstance(policy, str) else type(policy).__name__
    return SimulationResult(policy=name, rounds=rounds, regret=regret, pulls=pulls, best_arms=best_arms,
                            change_points=[start for start, _ in phases], mean_reward=total / rounds)
