"""EXP3: exponential weights for adversarial arms.

``exp3`` takes ``gamma`` or, when it is null, Auer et al.'s choice for ``horizon`` rounds:
``min(1, sqrt(K ln K / ((e - 1) horizon)))``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from quantcrew.ml_server.services.bandit.params import PolicyParams
from quantcrew.ml_server.services.bandit.policy import ArmStats, BanditPolicy

__all__ = ["EXP3"]

_LOGW_FLOOR = 1000.0


class EXP3(BanditPolicy):
    """EXP3 (Auer, Cesa-Bianchi, Freund & Schapire, 2002): exponential weights on
    importance-weighted rewards, mixed with ``gamma`` uniform exploration. Makes no
    stochastic assumption, so it pays more regret on stationary arms."""

    name = "exp3"

    def __init__(self, n_arms: int, params: PolicyParams | None = None) -> None:
        super().__init__(n_arms, params)
        k = n_arms
        self.gamma = self.params.gamma if self.params.gamma is not None else min(
            1.0, math.sqrt(k * math.log(k) / ((math.e - 1.0) * self.params.horizon))) if k > 1 else 1.0
        self._logw = [0.0] * n_arms

    def probabilities(self) -> list[float]:
        """Current choice probability of each arm (they sum to 1)."""
        top = max(self._logw)
        w = [math.exp(v - top) for v in self._logw]
        total = sum(w)
        g, k = self.gamma, self.n_arms
        return [(1.0 - g) * wi / total + g / k for wi in w]

    def select(self, rng: np.random.Generator) -> int:
        probs = self.probabilities()
        self._scores = probs  # type: ignore[assignment]
        u = rng.random()
        acc = 0.0
        for a, p in enumerate(probs):
            acc += p
            if u < acc:
                return a
        return self.n_arms - 1  # u within rounding of 1

    def propensity(self, arm: int) -> float | None:
        return self._scores[arm]

    def choice_probability(self, arm: int) -> float | None:
        return self.probabilities()[arm]

    def _learn(self, arm: int, reward: float, rng: np.random.Generator | None, propensity: float | None) -> None:
        p = propensity if propensity is not None else self._scores[arm]
        if p is None:
            p = self.probabilities()[arm]
        if not 0.0 < p <= 1.0:
            raise ValueError(f"propensity must be in (0, 1], got {p}")
        # A select's probability is never below gamma / K; flooring a caller's propensity there
        # bounds each step of the log-weight by 1 (an absurdly small one would overflow it).
        p = max(p, self.gamma / self.n_arms)
        x = self._unit(reward)
        logw = self._logw
        logw[arm] += self.gamma * x / (p * self.n_arms)
        top = max(logw)
        if top > 100.0:  # keep the log-weights small; probabilities are unchanged
            # A weight below e^-1000 of the top one is 0 in float either way; the floor keeps the
            # saved log-weights finite however long one arm lags.
            self._logw = [max(v - top, -_LOGW_FLOOR) for v in logw]

    def _stats(self, arm: int) -> ArmStats:
        p = self.probabilities()[arm]
        n = self._raw_n[arm]
        mean = self._raw_sum[arm] / n if n else None
        return ArmStats(estimate=mean, uncertainty=math.sqrt(p * (1.0 - p)), pulls=float(n), raw_pulls=n,
                        score=p, mean_reward=mean)

    def _dump(self) -> dict[str, Any]:
        return {"logw": list(self._logw), "gamma": self.gamma}

    def _load(self, state: Mapping[str, Any]) -> None:
        self._logw = [float(v) for v in state["logw"]]
        self.gamma = float(state["gamma"])
