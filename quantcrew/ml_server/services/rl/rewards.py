"""Rewards of the four specialised RL agents, one small stateful object each.

The environment calls ``reward.step(net_return, position, t)`` once per bar with the bar's net
return (after costs) of the position chosen at ``t``, and ``reward.reset()`` at every episode
start. Daily returns are ~1e-2, and stable-baselines3 learns badly from rewards of 1e-4, so
return-based rewards are multiplied by ``scale = 100`` (a reward of 1 is a 1% day):

* ``conservative`` (:class:`DrawdownPenalised`): ``scale * (r_t - lam * max(0, dd_t - dd_{t-1}))``
  where ``dd`` is the drawdown of the episode's equity curve ``prod(1 + r)`` from its running
  peak (a positive fraction). Only bars that deepen the drawdown are penalised; a loss in a
  drawdown costs about ``(1 + lam)`` times its size, recovery bars are not penalised.
* ``aggressive`` (:class:`LogReturn`): ``scale * log(1 + r_t)`` (growth-optimal, Kelly).
* ``balanced`` (:class:`DifferentialSharpe`): Moody & Saffell's differential Sharpe ratio, the
  first-order effect of ``r_t`` on an exponentially weighted Sharpe ratio; scale-free, O(1).
* ``contrarian`` (:class:`MeanReversion`): pays positions that fade the price's deviation
  ``z_t`` from its 20-bar mean (long when ``z_t < -threshold``, short when ``z_t > threshold``)
  ``scale * r_t * (1 + k * |z_t|)``, charges positions that follow it (long when
  ``z_t > threshold``, short when ``z_t < -threshold``) ``scale * r_t - penalty * |position|``, and
  pays ``scale * r_t`` otherwise (inside the band, or flat).

Any of them can be multiplied by a ``reward_scale`` (:class:`ScaledReward`): a training
request's search grid chooses that factor on a validation split, since how large the rewards are
against the value network's loss and the entropy bonus changes what the algorithms learn.

Rewards are plain-Python float arithmetic: the environment's step budget is microseconds.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "REWARDS",
    "REWARD_SCALE",
    "DifferentialSharpe",
    "DrawdownPenalised",
    "LogReturn",
    "MeanReversion",
    "Reward",
    "ScaledReward",
    "make_reward",
]

REWARDS: tuple[str, ...] = ("conservative", "aggressive", "balanced", "contrarian")
REWARD_SCALE = 100.0  # return-based rewards in percent


@runtime_checkable
class Reward(Protocol):
    """What the environment needs from a reward."""

    def reset(self) -> None:
        """Forget the episode's state (called by ``env.reset``)."""

    def step(self, net_return: float, position: float, t: int) -> float:
        """Reward of one bar: ``net_return`` of ``position`` held over bar ``t`` (after costs)."""


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0.0 or (v == 0.0 and not allow_zero):
        raise ValueError(f"{name} must be a finite {'non-negative' if allow_zero else 'positive'} number, got {value}")
    return v


class DrawdownPenalised:
    """Conservative: the scaled return minus ``lam`` times this bar's increase of drawdown.

    Args:
        lam: Weight of a drawdown increase (default 2: a loss that deepens the drawdown costs
            about three times its size).
        scale: Multiplier of returns (default :data:`REWARD_SCALE`).
    """

    def __init__(self, lam: float = 2.0, scale: float = REWARD_SCALE) -> None:
        self.lam = _check_positive("lam", lam, allow_zero=True)
        self.scale = _check_positive("scale", scale)
        self.reset()

    def reset(self) -> None:
        self._equity = 1.0
        self._peak = 1.0
        self._drawdown = 0.0

    def step(self, net_return: float, position: float, t: int) -> float:
        equity = self._equity * (1.0 + net_return)
        if equity > self._peak:
            self._peak = equity
        drawdown = 1.0 - equity / self._peak
        deeper = drawdown - self._drawdown
        self._equity = equity
        self._drawdown = drawdown
        if deeper > 0.0:
            return self.scale * (net_return - self.lam * deeper)
        return self.scale * net_return


class LogReturn:
    """Aggressive: ``scale * log(1 + r_t)`` (``r_t`` floored at ``-0.999999`` to stay finite).

    Args:
        scale: Multiplier (default :data:`REWARD_SCALE`).
    """

    _FLOOR = -0.999999

    def __init__(self, scale: float = REWARD_SCALE) -> None:
        self.scale = _check_positive("scale", scale)

    def reset(self) -> None:
        """Stateless: nothing to forget."""

    def step(self, net_return: float, position: float, t: int) -> float:
        r = net_return if net_return > self._FLOOR else self._FLOOR
        return self.scale * math.log1p(r)


class DifferentialSharpe:
    """Balanced: Moody & Saffell's differential Sharpe ratio (1998; Moody & Saffell 2001).

    With exponential moving estimates of the first and second moments of returns,
    ``A_t = A_{t-1} + eta * (r_t - A_{t-1})`` and ``B_t = B_{t-1} + eta * (r_t^2 - B_{t-1})``
    (both from 0), the reward of bar ``t`` is::

        D_t = (B * dA - A * dB / 2) / (B - A^2) ** 1.5,   dA = r_t - A,  dB = r_t^2 - B

    with ``A, B`` the estimates BEFORE bar ``t``. With ``bias_correction`` (default) ``A`` and
    ``B`` in that formula are divided by ``1 - (1 - eta)^n`` after ``n`` bars, as Adam does:
    the raw estimates start at 0 and would inflate ``D`` about ``1 / sqrt(eta)``-fold in an
    episode's first bars. ``D_t`` is 0 while the variance estimate ``B - A^2`` is at most
    ``min_variance`` (the first bar; a flat book) and is clipped to ``[-clip, clip]``.

    Args:
        eta: EMA rate (default 0.01, a ~100-bar memory).
        bias_correction: Debias the moment estimates (default True).
        clip: Bound of ``|D_t|`` (default 10).
        min_variance: Variance (in squared return units) below which ``D_t = 0`` (default 1e-10).
    """

    def __init__(
        self, eta: float = 0.01, *, bias_correction: bool = True, clip: float = 10.0, min_variance: float = 1e-10
    ) -> None:
        eta = float(eta)
        if not 0.0 < eta < 1.0:
            raise ValueError(f"eta must be in (0, 1), got {eta}")
        self.eta = eta
        self.bias_correction = bool(bias_correction)
        self.clip = _check_positive("clip", clip)
        self.min_variance = _check_positive("min_variance", min_variance, allow_zero=True)
        self.reset()

    def reset(self) -> None:
        self._a = 0.0
        self._b = 0.0
        self._decay = 1.0  # (1 - eta)^n after n bars

    def step(self, net_return: float, position: float, t: int) -> float:
        r = net_return
        a, b = self._a, self._b
        if self.bias_correction:
            seen = 1.0 - self._decay
            if seen > 0.0:
                a, b = a / seen, b / seen
        variance = b - a * a
        if variance > self.min_variance:
            d = (b * (r - a) - 0.5 * a * (r * r - b)) / (variance * math.sqrt(variance))
            d = self.clip if d > self.clip else (-self.clip if d < -self.clip else d)
        else:
            d = 0.0
        eta = self.eta
        self._a += eta * (r - self._a)
        self._b += eta * (r * r - self._b)
        self._decay *= 1.0 - eta
        return d


class MeanReversion:
    """Contrarian: rewards fading the price's deviation from its mean, charges following it.

    With ``z = price_z[t]`` (the raw ``price_z_20`` feature, see
    :mod:`quantcrew.ml_server.services.rl.features`) and ``p`` the position held over bar ``t``:

    * fading (``p > 0`` and ``z < -threshold``, or ``p < 0`` and ``z > threshold``):
      ``scale * r_t * (1 + k * |z|)``, the P&L amplified (gains and losses alike);
    * following (``p > 0`` and ``z > threshold``, or ``p < 0`` and ``z < -threshold``):
      ``scale * r_t - penalty * |p|``;
    * otherwise (``|z| <= threshold`` or flat): ``scale * r_t``.

    Args:
        price_z: ``price_z_20`` of every bar, indexed by the environment's ``t``.
        threshold: Band of ``|z|`` inside which no side is favoured (default 1).
        k: Amplification per unit of ``|z|`` of a fading trade's P&L (default 0.5).
        penalty: Charge per bar of a full position that follows the deviation, in reward units
            (default 0.1, i.e. 0.1% of return at ``scale = 100``).
        scale: Multiplier of returns (default :data:`REWARD_SCALE`).
    """

    def __init__(
        self,
        price_z: npt.ArrayLike,
        *,
        threshold: float = 1.0,
        k: float = 0.5,
        penalty: float = 0.1,
        scale: float = REWARD_SCALE,
    ) -> None:
        z = np.asarray(price_z, dtype=np.float64)
        if z.ndim != 1 or z.shape[0] == 0 or not np.all(np.isfinite(z)):
            raise ValueError(f"price_z must be a non-empty 1-D array of finite values, got shape {z.shape}")
        self.threshold = _check_positive("threshold", threshold, allow_zero=True)
        self.k = _check_positive("k", k, allow_zero=True)
        self.penalty = _check_positive("penalty", penalty, allow_zero=True)
        self.scale = _check_positive("scale", scale)
        self._z: list[float] = z.tolist()

    def reset(self) -> None:
        """Stateless: nothing to forget."""

    def step(self, net_return: float, position: float, t: int) -> float:
        base = self.scale * net_return
        if position == 0.0:
            return base
        z = self._z[t]
        thr = self.threshold
        if z > thr or z < -thr:
            if (position > 0.0) == (z < 0.0):  # fading the deviation
                return base * (1.0 + self.k * abs(z))
            return base - self.penalty * abs(position)
        return base


class ScaledReward:
    """Another reward multiplied by a constant ``factor`` (its state and reset are the wrapped reward's).

    Raises:
        ValueError: ``factor`` not a finite positive number.
    """

    def __init__(self, reward: Reward, factor: float) -> None:
        self.reward = reward
        self.factor = _check_positive("reward_scale", factor)

    def reset(self) -> None:
        self.reward.reset()

    def step(self, net_return: float, position: float, t: int) -> float:
        return self.factor * self.reward.step(net_return, position, t)


def make_reward(name: str, *, price_z: npt.ArrayLike | None = None, reward_scale: float = 1.0,
                **params: Any) -> Reward:
    """Build the reward of an agent by name.

    Args:
        name: One of :data:`REWARDS`.
        price_z: The raw price z-score per bar (required by ``contrarian``, ignored otherwise).
        reward_scale: Multiplier of the reward (1: the reward as documented above).
        **params: Keyword arguments of the reward's class (``lam``, ``eta``, ``k``...).

    Raises:
        ValueError: An unknown name (the message lists the valid ones), ``contrarian`` without
            ``price_z``, a parameter the reward does not take, or a bad parameter value.
    """
    reward = _make(name, price_z, params)
    return reward if float(reward_scale) == 1.0 else ScaledReward(reward, reward_scale)


def _make(name: str, price_z: npt.ArrayLike | None, params: dict[str, Any]) -> Reward:
    try:
        if name == "conservative":
            return DrawdownPenalised(**params)
        if name == "aggressive":
            return LogReturn(**params)
        if name == "balanced":
            return DifferentialSharpe(**params)
        if name == "contrarian":
            if price_z is None:
                raise ValueError("the contrarian reward needs price_z (the raw price z-score per bar)")
            return MeanReversion(price_z, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for reward {name!r}: {exc}") from exc
    raise ValueError(f"unknown reward {name!r}; valid rewards: {', '.join(REWARDS)}")
