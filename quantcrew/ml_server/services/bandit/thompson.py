"""Thompson sampling: Beta-Bernoulli, its discounted variant for non-stationary arms, and Gaussian.

The Beta-Bernoulli samplers turn a fractional reward x into a Bernoulli trial with success
probability x (Agrawal & Goyal, 2012), drawn from the caller's generator.
``discounted_thompson`` (Raj & Kalyani, 2017) multiplies every arm's Beta counts by
``discount`` each round (memory about ``1 / (1 - discount)`` rewards: 500 at the default
0.998). ``thompson_gaussian`` samples the mean from its Normal-inverse-gamma posterior
(Student t) with a weak prior centred on the middle of ``reward_range``: mean 0.5, one
pseudo-observation, shape 1 and scale 0.25 in rescaled units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from quantcrew.ml_server.services.bandit.params import PolicyParams
from quantcrew.ml_server.services.bandit.policy import ArmStats, BanditPolicy, argmax

__all__ = ["DiscountedThompson", "ThompsonBeta", "ThompsonGaussian"]

# Normal-inverse-gamma prior of thompson_gaussian, in rescaled units (reward_range -> [0, 1]).
_NIG_MEAN, _NIG_KAPPA, _NIG_ALPHA, _NIG_BETA = 0.5, 1.0, 1.0, 0.25
# Bound on a Student t draw: with 2 degrees of freedom a draw is occasionally astronomically large,
# and times a posterior scale of up to ~1e100 it could overflow; |t| > 1e50 has probability ~1e-100.
_T_LIMIT = 1e50


def _bernoulli(x: float, rng: np.random.Generator | None) -> float:
    """The Agrawal-Goyal trial: a reward in [0, 1] becomes a success with probability x."""
    if x == 0.0 or x == 1.0:
        return x
    if rng is None:
        raise ValueError("a random generator is needed to turn a fractional reward into a Bernoulli trial")
    return 1.0 if rng.random() < x else 0.0


class ThompsonBeta(BanditPolicy):
    """Beta-Bernoulli Thompson sampling: sample each arm's Beta posterior, play the largest."""

    name = "thompson_beta"

    def __init__(self, n_arms: int, params: PolicyParams | None = None) -> None:
        super().__init__(n_arms, params)
        self._succ = [0.0] * n_arms
        self._fail = [0.0] * n_arms

    def select(self, rng: np.random.Generator) -> int:
        a0, b0, beta = self.params.prior_alpha, self.params.prior_beta, rng.beta
        scores = [beta(a0 + s, b0 + f) for s, f in zip(self._succ, self._fail, strict=True)]
        self._scores = scores  # type: ignore[assignment]
        return argmax(scores)

    def _learn(self, arm: int, reward: float, rng: np.random.Generator | None, propensity: float | None) -> None:
        trial = _bernoulli(self._unit(reward), rng)
        self._succ[arm] += trial
        self._fail[arm] += 1.0 - trial

    def _stats(self, arm: int) -> ArmStats:
        a = self.params.prior_alpha + self._succ[arm]
        b = self.params.prior_beta + self._fail[arm]
        total = a + b
        return self._units(arm, a / total, math.sqrt(a * b / (total * total * (total + 1.0))),
                           self._succ[arm] + self._fail[arm])

    def _dump(self) -> dict[str, Any]:
        return {"succ": list(self._succ), "fail": list(self._fail)}

    def _load(self, state: Mapping[str, Any]) -> None:
        self._succ = [float(v) for v in state["succ"]]
        self._fail = [float(v) for v in state["fail"]]


class DiscountedThompson(ThompsonBeta):
    """Discounted Thompson sampling (Raj & Kalyani, 2017): every arm's Beta counts decay by
    ``discount`` each round, so the posterior forgets and re-explores after a change."""

    name = "discounted_thompson"

    def _learn(self, arm: int, reward: float, rng: np.random.Generator | None, propensity: float | None) -> None:
        trial = _bernoulli(self._unit(reward), rng)
        g = self.params.discount
        succ, fail = self._succ, self._fail
        for a in range(self.n_arms):
            succ[a] *= g
            fail[a] *= g
        succ[arm] += trial
        fail[arm] += 1.0 - trial


class ThompsonGaussian(BanditPolicy):
    """Gaussian Thompson sampling with unknown variance (Normal-inverse-gamma posterior).

    The sampled mean is Student t with 2 alpha_n degrees of freedom; the weak prior (see the
    module docstring) keeps an arm with identical rewards explorable.
    """

    name = "thompson_gaussian"
    clips = False

    def __init__(self, n_arms: int, params: PolicyParams | None = None) -> None:
        super().__init__(n_arms, params)
        self._n = [0] * n_arms
        self._mean = [0.0] * n_arms
        self._m2 = [0.0] * n_arms
        self._post = [self._posterior(a) for a in range(n_arms)]  # cached: only the updated arm changes

    def _posterior(self, arm: int) -> tuple[float, float, float]:
        """(posterior mean, scale of its Student t, degrees of freedom)."""
        n, mean = self._n[arm], self._mean[arm]
        kappa = _NIG_KAPPA + n
        mu = (_NIG_KAPPA * _NIG_MEAN + n * mean) / kappa
        alpha = _NIG_ALPHA + 0.5 * n
        d = mean - _NIG_MEAN
        beta = _NIG_BETA + 0.5 * self._m2[arm] + _NIG_KAPPA * n * d * d / (2.0 * kappa)
        return mu, math.sqrt(beta / (alpha * kappa)), 2.0 * alpha

    def select(self, rng: np.random.Generator) -> int:
        t = rng.standard_t
        scores = [mu + scale * min(max(t(dof), -_T_LIMIT), _T_LIMIT) for mu, scale, dof in self._post]
        self._scores = scores  # type: ignore[assignment]
        return argmax(scores)

    def _learn(self, arm: int, reward: float, rng: np.random.Generator | None, propensity: float | None) -> None:
        x = self._unit(reward)
        self._n[arm] += 1
        delta = x - self._mean[arm]
        self._mean[arm] += delta / self._n[arm]
        self._m2[arm] += delta * (x - self._mean[arm])
        self._post[arm] = self._posterior(arm)

    def _stats(self, arm: int) -> ArmStats:
        mu, scale, _ = self._post[arm]
        return self._units(arm, mu, scale, float(self._n[arm]))

    def _dump(self) -> dict[str, Any]:
        return {"n": list(self._n), "mean": list(self._mean), "m2": list(self._m2)}

    def _load(self, state: Mapping[str, Any]) -> None:
        self._n = [int(v) for v in state["n"]]
        self._mean = [float(v) for v in state["mean"]]
        self._m2 = [float(v) for v in state["m2"]]
        self._post = [self._posterior(a) for a in range(self.n_arms)]

