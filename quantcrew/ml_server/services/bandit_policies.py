"""Multi-armed bandit policies: UCB1, Thompson sampling, EXP3 and two non-stationary variants.

Pure Python on purpose: a bandit here has 2-32 arms, and one decision (``select`` then
``update``) costs a few microseconds in plain floats where numpy's per-call overhead would
dominate. Randomness always comes from the ``numpy.random.Generator`` the caller passes in, so
the owner of the policy (the bandit store, a simulation) also owns, persists and restores the
random stream; the policy state itself is a JSON-able dict (:meth:`BanditPolicy.to_state`)
that round-trips exactly.

Rewards are real numbers. ``reward_range=(lo, hi)`` maps them onto [0, 1]; UCB1,
sliding-window UCB, EXP3 and both Beta-Bernoulli samplers clip to it (a clipped reward is
counted), Gaussian Thompson only rescales. The Beta-Bernoulli samplers turn a fractional
reward x into a Bernoulli trial with success probability x (Agrawal & Goyal, 2012), drawn
from the caller's generator. Every figure that :meth:`BanditPolicy.explain` reports is back
in the reward's own units, except EXP3's probabilities.

Exploration defaults, measured by ``bench/bandit_regret.py``:

* ``ucb1`` and ``sliding_window_ucb`` use the variance-aware UCB1-Tuned bonus
  ``sqrt(ln t / n * min(1/4, var + sqrt(2 ln t / n)))`` (Auer, Cesa-Bianchi & Fischer, 2002)
  scaled by ``c``; ``ucb_bonus="hoeffding"`` gives the textbook ``c * sqrt(2 ln t / n)``
  (``c=1`` is MABWiser's ``UCB1(alpha=1)``).
* ``exp3`` takes ``gamma`` or, when it is null, Auer et al.'s choice for ``horizon`` rounds:
  ``min(1, sqrt(K ln K / ((e - 1) horizon)))``.
* ``discounted_thompson`` (Raj & Kalyani, 2017) multiplies every arm's Beta counts by
  ``discount`` each round (memory about ``1 / (1 - discount)`` rewards: 500 at the default
  0.998); ``sliding_window_ucb`` (Garivier & Moulines, 2011) keeps the last ``window`` (500)
  rewards.
* ``thompson_gaussian`` samples the mean from its Normal-inverse-gamma posterior (Student t)
  with a weak prior centred on the middle of ``reward_range``: mean 0.5, one pseudo-observation,
  shape 1 and scale 0.25 in rescaled units.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "POLICIES",
    "ArmStats",
    "BanditPolicy",
    "DiscountedThompson",
    "EXP3",
    "ParamError",
    "PolicyParams",
    "SlidingWindowUCB",
    "ThompsonBeta",
    "ThompsonGaussian",
    "UCB1",
    "make_policy",
]

POLICIES = ("ucb1", "thompson_beta", "thompson_gaussian", "exp3", "discounted_thompson", "sliding_window_ucb")
UCB_BONUSES = ("tuned", "hoeffding")

# Normal-inverse-gamma prior of thompson_gaussian, in rescaled units (reward_range -> [0, 1]).
_NIG_MEAN, _NIG_KAPPA, _NIG_ALPHA, _NIG_BETA = 0.5, 1.0, 1.0, 0.25


class ParamError(ValueError):
    """A bad policy name or parameter; ``param`` names it (e.g. ``"discount"``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


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


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ParamError(name, f"params.{name} must be a finite number, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParamError(name, f"params.{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """Parameters of every policy (each policy reads the ones it needs).

    Attributes:
        c: Exploration multiplier of the UCB bonus (ucb1, sliding_window_ucb).
        ucb_bonus: "tuned" (UCB1-Tuned, variance-aware) or "hoeffding" (sqrt(2 ln t / n)).
        gamma: EXP3 exploration rate in (0, 1]; None derives it from ``horizon``.
        horizon: Rounds EXP3's default gamma is tuned for.
        discount: Per-round discount of discounted_thompson, in (0, 1] (1: no forgetting).
        window: Rewards remembered by sliding_window_ucb.
        reward_range: (lo, hi) mapped onto [0, 1].
        prior_alpha: Beta prior successes (thompson_beta, discounted_thompson).
        prior_beta: Beta prior failures.
    """

    c: float = 1.0
    ucb_bonus: str = "tuned"
    gamma: float | None = None
    horizon: int = 10_000
    discount: float = 0.998
    window: int = 500
    reward_range: tuple[float, float] = (0.0, 1.0)
    prior_alpha: float = 1.0
    prior_beta: float = 1.0

    def __post_init__(self) -> None:
        c = _finite("c", self.c)
        if not 0.0 <= c <= 100.0:
            raise ParamError("c", f"params.c must be in [0, 100], got {c}")
        if self.ucb_bonus not in UCB_BONUSES:
            raise ParamError("ucb_bonus",
                             f"params.ucb_bonus must be one of {list(UCB_BONUSES)}, got {self.ucb_bonus!r}")
        if self.gamma is not None and not 0.0 < _finite("gamma", self.gamma) <= 1.0:
            raise ParamError("gamma", f"params.gamma must be in (0, 1], got {self.gamma}")
        _integer("horizon", self.horizon, 1, 10**9)
        if not 0.0 < _finite("discount", self.discount) <= 1.0:
            raise ParamError("discount", f"params.discount must be in (0, 1], got {self.discount}")
        _integer("window", self.window, 1, 10**6)
        rr = self.reward_range
        if not isinstance(rr, tuple | list) or len(rr) != 2:
            raise ParamError("reward_range", f"params.reward_range must be a pair (lo, hi), got {rr!r}")
        lo, hi = _finite("reward_range", rr[0]), _finite("reward_range", rr[1])
        if not lo < hi:
            raise ParamError("reward_range", f"params.reward_range needs lo < hi, got ({lo}, {hi})")
        object.__setattr__(self, "reward_range", (lo, hi))
        for name in ("prior_alpha", "prior_beta"):
            if not _finite(name, getattr(self, name)) > 0.0:
                raise ParamError(name, f"params.{name} must be > 0, got {getattr(self, name)}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> PolicyParams:
        """Build from a dict (e.g. JSON), refusing unknown keys with the list of known ones."""
        values = dict(values or {})
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise ParamError(unknown[0], f"unknown bandit params {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        if isinstance(values.get("reward_range"), list):
            values["reward_range"] = tuple(values["reward_range"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (reward_range as a list)."""
        out = asdict(self)
        out["reward_range"] = list(self.reward_range)
        return out


def _argmax(values: list[float]) -> int:
    best, best_i = values[0], 0
    for i in range(1, len(values)):
        if values[i] > best:
            best, best_i = values[i], i
    return best_i


def _bernoulli(x: float, rng: np.random.Generator | None) -> float:
    """The Agrawal-Goyal trial: a reward in [0, 1] becomes a success with probability x."""
    if x == 0.0 or x == 1.0:
        return x
    if rng is None:
        raise ValueError("a random generator is needed to turn a fractional reward into a Bernoulli trial")
    return 1.0 if rng.random() < x else 0.0


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
        self._learn(arm, float(reward), rng, propensity)
        self._raw_n[arm] += 1
        self._raw_sum[arm] += reward

    def _learn(self, arm: int, reward: float, rng: np.random.Generator | None, propensity: float | None) -> None:
        raise NotImplementedError

    def propensity(self, arm: int) -> float | None:
        """Probability with which ``arm`` was chosen at the last ``select`` (EXP3 only)."""
        return None

    def _unit(self, reward: float) -> float:
        x = (reward - self._lo) / self._width
        if not self.clips:
            return x
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

    # -- persistence -------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-able dict that :meth:`from_state` turns back into an identical policy."""
        return {"policy": self.name, "n_arms": self.n_arms, "params": self.params.to_dict(),
                "raw_n": list(self._raw_n), "raw_sum": list(self._raw_sum), "scores": list(self._scores),
                "clipped": self._clipped, **self._dump()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BanditPolicy:
        """Rebuild the policy saved by :meth:`to_state` (any policy class: the name decides)."""
        try:
            policy = make_policy(state["policy"], state["n_arms"], PolicyParams.from_mapping(state["params"]))
            policy._raw_n = [int(v) for v in state["raw_n"]]
            policy._raw_sum = [float(v) for v in state["raw_sum"]]
            policy._scores = [None if v is None else float(v) for v in state["scores"]]
            policy._clipped = int(state["clipped"])
            policy._load(state)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a saved bandit policy state: {exc!r}") from exc
        if len(policy._raw_n) != policy.n_arms or len(policy._scores) != policy.n_arms:
            raise ValueError("saved bandit policy state has the wrong number of arms")
        return policy

    def _dump(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError


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
        return _argmax(scores)  # type: ignore[arg-type]

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
        return _argmax(scores)

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
        scores = [mu + scale * t(dof) for mu, scale, dof in self._post]
        self._scores = scores  # type: ignore[assignment]
        return _argmax(scores)

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

    def _learn(self, arm: int, reward: float, rng: np.random.Generator | None, propensity: float | None) -> None:
        p = propensity if propensity is not None else self._scores[arm]
        if p is None:
            p = self.probabilities()[arm]
        if not 0.0 < p <= 1.0:
            raise ValueError(f"propensity must be in (0, 1], got {p}")
        x = self._unit(reward)
        logw = self._logw
        logw[arm] += self.gamma * x / (p * self.n_arms)
        top = max(logw)
        if top > 100.0:  # keep the log-weights small; probabilities are unchanged
            self._logw = [v - top for v in logw]

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


_REGISTRY: dict[str, type[BanditPolicy]] = {
    cls.name: cls for cls in (UCB1, ThompsonBeta, ThompsonGaussian, EXP3, DiscountedThompson, SlidingWindowUCB)
}


def make_policy(name: str, n_arms: int, params: PolicyParams | Mapping[str, Any] | None = None) -> BanditPolicy:
    """A fresh policy by name.

    Args:
        name: One of :data:`POLICIES`.
        n_arms: Number of arms.
        params: :class:`PolicyParams` or a dict of its fields.

    Raises:
        ParamError: Unknown name (listing the valid ones) or a bad parameter (naming it).
    """
    cls = _REGISTRY.get(name)
    if cls is None:
        raise ParamError("policy", f"unknown bandit policy {name!r}; valid: {list(POLICIES)}")
    if not isinstance(params, PolicyParams):
        params = PolicyParams.from_mapping(params)
    return cls(n_arms, params)
