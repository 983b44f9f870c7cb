"""The bandit policy contract: choose an arm, learn from its reward, explain, save and restore.

Pure Python on purpose: a bandit here has 2-32 arms, and one decision (``select`` then
``update``) costs a few microseconds in plain floats where numpy's per-call overhead would
dominate. Randomness always comes from the ``numpy.random.Generator`` the caller passes in, so
the owner of the policy (the bandit store, a simulation) also owns, persists and restores the
random stream; the policy state itself is a JSON-able dict (:meth:`BanditPolicy.to_state`)
that round-trips exactly (:func:`~quantcrew.ml_server.services.bandit.policies.restore_policy`).

Rewards are real numbers. ``reward_range=(lo, hi)`` maps them onto [0, 1]; UCB1,
sliding-window UCB, EXP3 and both Beta-Bernoulli samplers clip to it (a clipped reward is
counted), Gaussian Thompson only rescales. Every figure that :meth:`BanditPolicy.explain`
reports is back in the reward's own units, except EXP3's probabilities.

Any finite reward within +-:data:`~quantcrew.ml_server.services.bandit.params.REWARD_LIMIT` keeps
every figure finite, in any sequence: the clipping policies work in [0, 1], Gaussian Thompson holds
a rescaled reward within +-:data:`UNIT_LIMIT` (see :meth:`BanditPolicy._unit`) and EXP3 keeps its
log-weights in a bounded band. :meth:`BanditPolicy.is_finite` checks a (restored) policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from quantcrew.ml_server.services.bandit.params import REWARD_LIMIT, ParamError, PolicyParams

__all__ = ["UNIT_LIMIT", "ArmStats", "BanditPolicy", "argmax"]

# The largest |rescaled reward| a non-clipping policy keeps: a narrow reward_range (width 1e-300)
# would otherwise turn an ordinary reward into 1e306 units, whose square overflows.
UNIT_LIMIT = 1e100


@dataclass(frozen=True, slots=True)
class ArmStats:
    """What one arm looks like to its policy, in reward units.

    Attributes:
        estimate: Estimated mean reward (UCB: empirical mean; Thompson: posterior mean; EXP3:
            empirical mean); None while the policy holds no reward for the arm.
        uncertainty: UCB: the exploration bonus; Thompson: posterior sd (Gaussian: scale of the
            Student-t posterior); EXP3: sqrt(p (1 - p)) of its choice probability p.
        pulls: Rewards the policy currently counts (discounted or in-window for the
            non-stationary variants).
        raw_pulls: Rewards ever received.
        score: What the choice compared: UCB index or Thompson sample at the last ``select``
            (None: UCB had no reward for the arm, so its index was unbounded); EXP3: the current
            choice probability.
        mean_reward: Lifetime mean of the raw (unclipped) rewards; None before the first.
    """

    estimate: float | None
    uncertainty: float | None
    pulls: float
    raw_pulls: int
    score: float | None
    mean_reward: float | None


def argmax(values: list[float]) -> int:
    """Index of the largest value, the first on a tie (plain Python: faster than numpy on a few arms)."""
    best, best_i = values[0], 0
    for i in range(1, len(values)):
        if values[i] > best:
            best, best_i = values[i], i
    return best_i


class BanditPolicy:
    """Base of every policy: choose an arm, learn from its reward, explain, save and restore.

    Args:
        n_arms: Number of arms (>= 1).
        params: Parameters; defaults to :class:`PolicyParams` ().
    """

    name: ClassVar[str] = ""
    clips: ClassVar[bool] = True

    def __init__(self, n_arms: int, params: PolicyParams | None = None) -> None:
        if isinstance(n_arms, bool) or not isinstance(n_arms, int) or n_arms < 1:
            raise ParamError("n_arms", f"n_arms must be a positive integer, got {n_arms!r}")
        self.n_arms = n_arms
        self.params = params if params is not None else PolicyParams()
        lo, hi = self.params.reward_range
        self._lo, self._width = lo, hi - lo
        self._raw_n = [0] * n_arms
        self._raw_sum = [0.0] * n_arms
        self._scores: list[float | None] = [None] * n_arms
        self._clipped = 0

    # -- the decision ------------------------------------------------------------------------

    def select(self, rng: np.random.Generator) -> int:
        """Choose an arm (0-based) and remember the scores compared."""
        raise NotImplementedError

    def update(self, arm: int, reward: float, rng: np.random.Generator | None = None, *,
               propensity: float | None = None) -> None:
        """Learn from ``reward`` earned by ``arm``.

        Args:
            arm: The arm played.
            reward: Its reward, in the units of ``reward_range``.
            rng: Generator for the Bernoulli trial of the Beta samplers (needed for a reward
                strictly inside the range).
            propensity: EXP3 only: the probability with which the arm was chosen; defaults to
                the probability at the last ``select``.
        """
        if isinstance(arm, bool) or not isinstance(arm, int) or not 0 <= arm < self.n_arms:
            raise ValueError(f"arm must be an integer in [0, {self.n_arms}), got {arm!r}")
        if not math.isfinite(reward):
            raise ValueError(f"reward must be a finite number, got {reward!r}")
        if abs(reward) > REWARD_LIMIT:
            raise ValueError(f"reward must lie within +-{REWARD_LIMIT:g}, got {reward!r}")
        self._learn(arm, float(reward), rng, propensity)
        self._raw_n[arm] += 1
        self._raw_sum[arm] += reward

    def _learn(self, arm: int, reward: float, rng: np.random.Generator | None, propensity: float | None) -> None:
        raise NotImplementedError

    def propensity(self, arm: int) -> float | None:
        """Probability with which ``arm`` was chosen at the last ``select`` (EXP3 only)."""
        return None

    def choice_probability(self, arm: int) -> float | None:
        """Probability with which a ``select`` now would choose ``arm``, without drawing (EXP3 only).

        Recorded with a decision made without a draw, so that EXP3 still weighs its reward.
        """
        return None

    def _unit(self, reward: float) -> float:
        x = (reward - self._lo) / self._width
        if not self.clips:
            # Held, not counted as clipped: only a reward ~1e100 range-widths away gets here.
            return x if -UNIT_LIMIT <= x <= UNIT_LIMIT else math.copysign(UNIT_LIMIT, x)
        if x < 0.0:
            self._clipped += 1
            return 0.0
        if x > 1.0:
            self._clipped += 1
            return 1.0
        return x

    def would_clip(self, reward: float) -> bool:
        """True when ``reward`` lies outside ``reward_range`` and this policy clips it."""
        lo, hi = self.params.reward_range
        return self.clips and not lo <= reward <= hi

    # -- reading -----------------------------------------------------------------------------

    def explain(self) -> list[ArmStats]:
        """Every arm's estimate, uncertainty, pulls and score, in reward units."""
        return [self._stats(arm) for arm in range(self.n_arms)]

    def _stats(self, arm: int) -> ArmStats:
        raise NotImplementedError

    def _units(self, arm: int, est: float | None, unc: float | None, pulls: float) -> ArmStats:
        lo, w = self._lo, self._width
        score = self._scores[arm]
        n = self._raw_n[arm]
        return ArmStats(
            estimate=None if est is None else lo + w * est,
            uncertainty=None if unc is None else w * unc,
            pulls=pulls, raw_pulls=n,
            score=None if score is None else lo + w * score,
            mean_reward=self._raw_sum[arm] / n if n else None,
        )

    @property
    def total_pulls(self) -> int:
        """Rewards received so far."""
        return sum(self._raw_n)

    @property
    def clipped(self) -> int:
        """Rewards clipped to ``reward_range`` so far."""
        return self._clipped

    def pseudo_regret(self) -> float:
        """Estimated regret: sum over arms of pulls_a * (max_b mean_b - mean_a), lifetime means.

        An estimate from the empirical means (the true best arm is unknown outside a simulation).
        """
        means = [(n, s / n) for n, s in zip(self._raw_n, self._raw_sum, strict=True) if n]
        if not means:
            return 0.0
        best = max(m for _, m in means)
        return sum(n * (best - m) for n, m in means)

    def is_finite(self) -> bool:
        """True when every saved number and every figure :meth:`explain` reports is finite.

        A policy saved by an older version may hold an overflowed (inf or NaN) figure; this lets its
        owner refuse it instead of answering with it.
        """
        stats = self.explain()
        figures = [v for s in stats for v in (s.estimate, s.uncertainty, s.pulls, s.score, s.mean_reward)]
        return _all_finite(self.to_state()) and _all_finite(figures) and math.isfinite(self.pseudo_regret())

    # -- persistence -------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`load_state` (on a fresh policy of the same name) turns back into this one."""
        return {"policy": self.name, "n_arms": self.n_arms, "params": self.params.to_dict(),
                "raw_n": list(self._raw_n), "raw_sum": list(self._raw_sum), "scores": list(self._scores),
                "clipped": self._clipped, **self._dump()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Take the counters and estimates saved by :meth:`to_state`.

        Raises:
            KeyError: a field is missing.
            TypeError: a field holds the wrong kind of value.
            ValueError: the state holds another number of arms.
        """
        self._raw_n = [int(v) for v in state["raw_n"]]
        self._raw_sum = [float(v) for v in state["raw_sum"]]
        self._scores = [None if v is None else float(v) for v in state["scores"]]
        self._clipped = int(state["clipped"])
        self._load(state)
        if len(self._raw_n) != self.n_arms or len(self._scores) != self.n_arms:
            raise ValueError("saved bandit policy state has the wrong number of arms")

    def _dump(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError



def _all_finite(value: Any) -> bool:
    """True when no float anywhere inside ``value`` (nested lists and dicts) is inf or NaN."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, Mapping):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_all_finite(v) for v in value)
    return True
