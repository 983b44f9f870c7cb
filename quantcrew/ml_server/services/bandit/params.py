"""Bandit policy parameters: one set of fields every policy reads from, checked with the name of a bad one.

Rewards are real numbers; ``reward_range=(lo, hi)`` maps them onto [0, 1] for every policy.
Both a reward and the ends of ``reward_range`` lie within +-:data:`REWARD_LIMIT`, which keeps every
policy's sums, squares and posterior figures finite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["REWARD_LIMIT", "UCB_BONUSES", "ParamError", "PolicyParams"]

UCB_BONUSES = ("tuned", "hoeffding")

# The largest |reward| (and |end of reward_range|) a policy takes. Squared and summed over even
# 2**63 rewards it stays far below the float maximum (1.8e308), so no policy can overflow on it.
REWARD_LIMIT = 1e100


class ParamError(ValueError):
    """A bad policy name or parameter; ``param`` names it (e.g. ``"discount"``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


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
        if max(abs(lo), abs(hi)) > REWARD_LIMIT:
            raise ParamError("reward_range",
                             f"params.reward_range must lie within +-{REWARD_LIMIT:g}, got ({lo}, {hi})")
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

