"""A single-asset trading environment (gymnasium) over precomputed, already-scaled features.

At bar ``t`` the agent sees ``features[t]`` (built from bars ``<= t``, see
:mod:`quantcrew.ml_server.services.rl.features`) and the position it has held since ``t - 1``,
chooses a position ``p_t`` and is paid over the next bar::

    cost_t = (cost_bps + slippage_bps) * 1e-4 * |p_t - p_{t-1}|
    net_t  = p_t * forward_returns[t] - cost_t
    reward = reward.step(net_t, p_t, t)

Discrete actions ``0, 1, 2`` are the positions ``-1, 0, +1`` (:data:`ACTION_POSITIONS`); the
continuous variant takes a target weight in ``[-1, 1]``. An episode ends (``terminated``) at
the end of the span; with ``episode_length`` it starts at a random bar of the span (drawn from
the env's ``np_random``, so ``reset(seed=...)`` reproduces it) and is ``truncated`` after that
many steps.

``step`` is plain-Python float arithmetic on lists built once; its observation is a copy of a
row of a table built once (one table per discrete position, the position column already
filled), the one numpy allocation per step: gymnasium's checker (rightly) refuses
observations that share memory with earlier ones, since users keep them.
"""

from __future__ import annotations

import math
from typing import Any, Literal, SupportsFloat

import gymnasium
import numpy as np
import numpy.typing as npt
from gymnasium import spaces

from quantcrew.ml_server.services.rl.rewards import Reward

__all__ = ["ACTION_MODES", "ACTION_POSITIONS", "TradingEnv"]

ACTION_POSITIONS: tuple[float, float, float] = (-1.0, 0.0, 1.0)
ACTION_MODES: tuple[str, ...] = ("discrete", "continuous")
_DISCRETE: dict[int, int] = {0: 0, 1: 1, 2: 2}

Float32Array = npt.NDArray[np.float32]
ActType = np.int64 | int | npt.NDArray[np.floating[Any]]


class TradingEnv(gymnasium.Env[Float32Array, Any]):
    """Trade one asset over bars ``start..end-1`` of precomputed features.

    Args:
        features: Scaled features, shape ``(T, F)`` (converted to float32), finite.
        forward_returns: ``close[t+1] / close[t] - 1`` per bar, shape ``(T,)``, finite.
        reward: The agent's reward (see :mod:`quantcrew.ml_server.services.rl.rewards`).
        start: First bar an episode may trade.
        end: One past the last bar traded (``<= T``; bar ``T - 1`` usually has no forward
            return, so callers pass ``end <= T - 1``).
        action_mode: ``"discrete"`` (short / flat / long) or ``"continuous"`` (target weight).
        cost_bps: Commission per unit of turnover, in basis points.
        slippage_bps: Slippage per unit of turnover, in basis points.
        episode_length: None: one episode is the whole span from ``start``; else episodes of
            this many steps from a random start (the whole span when it is not shorter).
        include_position: Append the current position to the observation.

    Raises:
        ValueError: A bad argument (the message names it).
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        features: npt.ArrayLike,
        forward_returns: npt.ArrayLike,
        reward: Reward,
        *,
        start: int,
        end: int,
        action_mode: Literal["discrete", "continuous"] = "discrete",
        cost_bps: float = 1.0,
        slippage_bps: float = 1.0,
        episode_length: int | None = None,
        include_position: bool = True,
    ) -> None:
        super().__init__()
        feats = np.array(features, dtype=np.float32)  # a copy: the env keeps it
        fwd = np.asarray(forward_returns, dtype=np.float64)
        _check_arrays(feats, fwd)
        n = int(feats.shape[0])
        if not (isinstance(start, int | np.integer) and isinstance(end, int | np.integer)):
            raise ValueError(f"start and end must be integers, got {start!r} and {end!r}")
        if not 0 <= start < end <= n:
            raise ValueError(f"start and end must satisfy 0 <= start < end <= {n} (rows), got {start}, {end}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        for name, value in (("cost_bps", cost_bps), ("slippage_bps", slippage_bps)):
            if not (math.isfinite(float(value)) and float(value) >= 0.0):
                raise ValueError(f"{name} must be a finite non-negative number, got {value}")
        if episode_length is not None and (not isinstance(episode_length, int | np.integer) or episode_length < 1):
            raise ValueError(f"episode_length must be None or a positive integer, got {episode_length!r}")
        if not isinstance(reward, Reward):
            raise ValueError(f"reward must have reset() and step(net_return, position, t), got {type(reward).__name__}")

        self.start = int(start)
        self.end = int(end)
        self.action_mode = action_mode
        self.cost_bps = float(cost_bps)
        self.slippage_bps = float(slippage_bps)
        self.include_position = bool(include_position)
        span = self.end - self.start
        self.episode_length = None if episode_length is None or episode_length >= span else int(episode_length)
        self.reward = reward
        self._cost_rate = (self.cost_bps + self.slippage_bps) * 1e-4
        self._fwd: list[float] = fwd.tolist()
        self._last_row = n - 1
        self._tables = _observation_tables(feats, action_mode, self.include_position)
        self._table = self._tables[1]

        width = feats.shape[1] + (1 if self.include_position else 0)
        low = np.minimum(feats.min(axis=0), -1.0)
        high = np.maximum(feats.max(axis=0), 1.0)
        if self.include_position:
            low = np.append(low, np.float32(-1.0))
            high = np.append(high, np.float32(1.0))
        self.observation_space = spaces.Box(low=low, high=high, shape=(width,), dtype=np.float32)
        self.action_space: spaces.Space[Any] = (
            spaces.Discrete(3) if action_mode == "discrete" else spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        )

        self._t = self.start
        self._stop = self.end
        self._steps = 0
        self._position = 0.0
        self._started = False

    @property
    def position(self) -> float:
        """The position held now (since the last step)."""
        return self._position

    @property
    def t(self) -> int:
        """The bar the next step trades."""
        return self._t

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Float32Array, dict[str, Any]]:
        """Start an episode flat: at ``start``, or at a random bar when ``episode_length`` is set.

        ``options`` is accepted for gymnasium's API and ignored.
        """
        super().reset(seed=seed)
        if self.episode_length is None:
            t0 = self.start
            self._stop = self.end
        else:
            t0 = int(self.np_random.integers(self.start, self.end - self.episode_length + 1))
            self._stop = t0 + self.episode_length
        self._t = t0
        self._steps = 0
        self._position = 0.0
        self._table = self._tables[1]
        self._started = True
        self.reward.reset()
        return self._observe(t0, 0.0), {"t": t0, "position": 0.0}

    def step(self, action: ActType) -> tuple[Float32Array, SupportsFloat, bool, bool, dict[str, Any]]:
        """Hold the position ``action`` asks for over bar ``t`` and move to ``t + 1``."""
        t = self._t
        if t >= self._stop or not self._started:
            raise RuntimeError("the episode is over (or never started): call reset()")
        if self.action_mode == "discrete":
            try:
                index = _DISCRETE[action]  # type: ignore[index]
            except (KeyError, TypeError):
                index = _discrete_index(action)
            position = ACTION_POSITIONS[index]
            self._table = self._tables[index]
        else:
            position = _target_weight(action)
        previous = self._position
        turnover = abs(position - previous)
        net = position * self._fwd[t] - self._cost_rate * turnover
        reward = self.reward.step(net, position, t)
        self._position = position
        self._steps += 1
        nxt = t + 1
        self._t = nxt
        terminated = nxt >= self.end
        truncated = not terminated and nxt >= self._stop
        obs = self._observe(nxt if nxt <= self._last_row else self._last_row, position)
        return (
            obs,
            reward,
            terminated,
            truncated,
            {"net_return": net, "position": position, "turnover": turnover, "t": t},
        )

    def _observe(self, row: int, position: float) -> Float32Array:
        obs: Float32Array = self._table[row].copy()
        if self.action_mode == "continuous" and self.include_position:
            obs[-1] = position
        return obs


def _check_arrays(feats: Float32Array, fwd: npt.NDArray[np.float64]) -> None:
    if feats.ndim != 2 or feats.shape[0] < 2 or feats.shape[1] < 1:
        raise ValueError(f"features must be 2-D (bars, features) with at least 2 rows, got shape {feats.shape}")
    if not np.all(np.isfinite(feats)):
        raise ValueError("features must be finite (after casting to float32)")
    if fwd.shape != (feats.shape[0],):
        raise ValueError(f"forward_returns must have shape ({feats.shape[0]},) like features' rows, got {fwd.shape}")
    if not np.all(np.isfinite(fwd)) or np.any(fwd <= -1.0):
        raise ValueError("forward_returns must be finite and above -1")


def _observation_tables(feats: Float32Array, action_mode: str, include_position: bool) -> list[Float32Array]:
    """Observation rows per discrete position (index as :data:`ACTION_POSITIONS`).

    Without a position column, or in the continuous variant (whose position is written into
    each copied row), one table serves every position.
    """
    if not include_position:
        return [feats, feats, feats]
    column = np.zeros((feats.shape[0], 1), dtype=np.float32)
    if action_mode == "continuous":
        table = np.concatenate([feats, column], axis=1)
        return [table, table, table]
    return [np.concatenate([feats, column + np.float32(position)], axis=1) for position in ACTION_POSITIONS]


def _discrete_index(action: Any) -> int:
    try:
        value = np.asarray(action)
        index = int(value.reshape(-1)[0]) if value.size == 1 else -1
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a discrete action must be 0, 1 or 2, got {action!r}") from exc
    if index not in _DISCRETE or float(value.reshape(-1)[0]) != index:
        raise ValueError(f"a discrete action must be 0, 1 or 2, got {action!r}")
    return index


def _target_weight(action: Any) -> float:
    try:
        weight = float(action[0])
    except (TypeError, IndexError):
        try:
            weight = float(action)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"a continuous action must be a target weight in [-1, 1], got {action!r}") from exc
    if not math.isfinite(weight):
        raise ValueError(f"a continuous action must be finite, got {action!r}")
    return 1.0 if weight > 1.0 else (-1.0 if weight < -1.0 else weight)
