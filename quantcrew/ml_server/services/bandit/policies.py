"""The bandit policies by name: UCB1, Thompson sampling, EXP3 and two non-stationary variants.

:func:`make_policy` builds a fresh one and :func:`restore_policy` one saved with
:meth:`~quantcrew.ml_server.services.bandit.policy.BanditPolicy.to_state`. Each policy's
exploration default, measured by ``bench/bandit_regret.py``, is described in its module
(:mod:`~quantcrew.ml_server.services.bandit.ucb`, :mod:`~quantcrew.ml_server.services.bandit.thompson`,
:mod:`~quantcrew.ml_server.services.bandit.exp3`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from quantcrew.ml_server.services.bandit.exp3 import EXP3
from quantcrew.ml_server.services.bandit.params import ParamError, PolicyParams
from quantcrew.ml_server.services.bandit.policy import BanditPolicy
from quantcrew.ml_server.services.bandit.thompson import DiscountedThompson, ThompsonBeta, ThompsonGaussian
from quantcrew.ml_server.services.bandit.ucb import UCB1, SlidingWindowUCB

__all__ = ["POLICIES", "make_policy", "restore_policy"]

POLICIES = ("ucb1", "thompson_beta", "thompson_gaussian", "exp3", "discounted_thompson", "sliding_window_ucb")

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


def restore_policy(state: Mapping[str, Any]) -> BanditPolicy:
    """Rebuild the policy saved by ``to_state`` (any policy: its saved name decides).

    Raises:
        ValueError: not a saved policy state, or one with the wrong number of arms.
    """
    try:
        policy = make_policy(state["policy"], state["n_arms"], PolicyParams.from_mapping(state["params"]))
        policy.load_state(state)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a saved bandit policy state: {exc!r}") from exc
    return policy
