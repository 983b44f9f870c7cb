"""Upper-confidence-bound policies: UCB1 and its sliding-window variant for non-stationary arms.

Both use the variance-aware UCB1-Tuned bonus ``sqrt(ln t / n * min(1/4, var + sqrt(2 ln t / n)))``
(Auer, Cesa-Bianchi & Fischer, 2002) scaled by ``c``; ``ucb_bonus="hoeffding"`` gives the
textbook ``c * sqrt(2 ln t / n)`` (``c=1`` is MABWiser's ``UCB1(alpha=1)``).
``sliding_window_ucb`` (Garivier & Moulines, 2011) keeps the last ``window`` (500) rewards.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np

from quantcrew.ml_server.services.bandit.params import PolicyParams
from quantcrew.ml_server.services.bandit.policy import ArmStats, BanditPolicy, argmax

__all__ = ["UCB1", "SlidingWindowUCB"]


class _UCBBase(BanditPolicy):
    """Shared index of UCB1 and sliding-window UCB over per-arm counts, sums and squared sums."""

    def __init__(self, n_arms: int, params: PolicyParams | None = None) -> None:
        super().__init__(n_arms, params)
        self._n = [0] * n_arms
        self._s = [0.0] * n_arms
        self._ss = [0.0] * n_arms
        self._t = 0

    def _log_t(self) -> float:
        return math.log(self._t) if self._t > 1 else 0.0

    def _bonus(self, arm: int, log_t: float) -> float:
        n = self._n[arm]
        if self.params.ucb_bonus == "hoeffding":
            return self.params.c * math.sqrt(2.0 * log_t / n)
        mean = self._s[arm] / n
        var = self._ss[arm] / n - mean * mean
        v = (var if var > 0.0 else 0.0) + math.sqrt(2.0 * log_t / n)
        return self.params.c * math.sqrt(log_t / n * (v if v < 0.25 else 0.25))

    def select(self, rng: np.random.Generator) -> int:
        log_t = self._log_t()
        n, s = self._n, self._s
        scores: list[float | None] = [s[a] / n[a] + self._bonus(a, log_t) if n[a] else None
                                      for a in range(self.n_arms)]
        self._scores = scores
        if 0 in n:
            return n.index(0)  # an arm without a reward has an unbounded index: play it first
        return argmax(scores)  # type: ignore[arg-type]

    def _stats(self, arm: int) -> ArmStats:
        n = self._n[arm]
        if not n:
            return self._units(arm, None, None, 0.0)
        return self._units(arm, self._s[arm] / n, self._bonus(arm, self._log_t()), float(n))

    def _add(self, arm: int, x: float) -> None:
        self._n[arm] += 1
        self._s[arm] += x
        self._ss[arm] += x * x
        self._t += 1

    def _dump(self) -> dict[str, Any]:
        return {"n": list(self._n), "s": list(self._s), "ss": list(self._ss), "t": self._t}

    def _load(self, state: Mapping[str, Any]) -> None:
        self._n = [int(v) for v in state["n"]]
        self._s = [float(v) for v in state["s"]]
        self._ss = [float(v) for v in state["ss"]]
        self._t = int(state["t"])


class UCB1(_UCBBase):
    """UCB1 (Auer et al., 2002): play the arm with the highest mean + bonus; every arm once first."""

    name = "ucb1"

    def _learn(self, arm: int, reward: float, rng: np.random.Generator | None, propensity: float | None) -> None:
        self._add(arm, self._unit(reward))


class SlidingWindowUCB(_UCBBase):
    """Sliding-window UCB (Garivier & Moulines, 2011): UCB over the last ``window`` rewards only.

    ``t`` in the bonus is min(rewards seen, window); an arm with no reward in the window is
    played again.
    """

    name = "sliding_window_ucb"

    def __init__(self, n_arms: int, params: PolicyParams | None = None) -> None:
        super().__init__(n_arms, params)
        self._window: deque[tuple[int, float]] = deque()

    def _log_t(self) -> float:
        t = min(self._t, self.params.window)
        return math.log(t) if t > 1 else 0.0

    def _learn(self, arm: int, reward: float, rng: np.random.Generator | None, propensity: float | None) -> None:
        x = self._unit(reward)
        self._window.append((arm, x))
        self._add(arm, x)
        if len(self._window) > self.params.window:
            old, x0 = self._window.popleft()
            self._n[old] -= 1
            if self._n[old]:
                self._s[old] -= x0
                self._ss[old] -= x0 * x0
            else:  # no drift left behind once an arm leaves the window
                self._s[old] = self._ss[old] = 0.0

    def _dump(self) -> dict[str, Any]:
        return {**super()._dump(), "window": [[a, x] for a, x in self._window]}

    def _load(self, state: Mapping[str, Any]) -> None:
        super()._load(state)
        self._window = deque((int(a), float(x)) for a, x in state["window"])

