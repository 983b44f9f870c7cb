"""The four specialised agents' trading rules: a target position per bar, from closes alone (numpy only).

aggressive and balanced follow momentum (balanced sized by inverse volatility), conservative
follows momentum only while volatility is at or below its 1-year median, contrarian fades
1.5-sd deviations from the 20-bar mean. Bar ``t`` reads closes ``<= t`` only, so the same
rules serve the strategy tool's fallback (:func:`quantcrew.tools.fallbacks.strategy_fallback`)
and the walk-forward backtest.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "RULE_DESCRIPTIONS",
    "STRATEGY_AGENTS",
    "as_closes",
    "mean_reversion_positions",
    "momentum_positions",
    "price_z_20",
    "rule_indicators",
    "rule_positions",
    "vol_filtered_momentum_positions",
    "vol_scaled_momentum_positions",
    "volatility_20",
]

STRATEGY_AGENTS: tuple[str, ...] = ("conservative", "aggressive", "balanced", "contrarian")
"""The four specialised agents, in the order every strategy and selection answer lists them."""

_FAST = 20          # short moving average / volatility / z-score window (bars)
_SLOW = 60          # long moving average (bars)
_YEAR = 252         # bars of 20-bar volatility whose median is the "normal" level
_MIN_VOL_HISTORY = 20  # 20-bar vol values needed before its median means anything
_Z_BAND = 1.5       # contrarian: fade closes beyond this many 20-bar sd from the 20-bar mean

RULE_DESCRIPTIONS: dict[str, str] = {
    "aggressive": f"momentum: long when the {_FAST}-bar mean close is above the {_SLOW}-bar mean, short when below",
    "balanced": f"momentum ({_FAST}/{_SLOW}-bar means) scaled by inverse volatility: size = min(1, 1-year median "
                f"{_FAST}-bar vol / current {_FAST}-bar vol)",
    "conservative": f"momentum ({_FAST}/{_SLOW}-bar means), flat while the {_FAST}-bar vol is above its 1-year "
                    "median",
    "contrarian": f"mean reversion: short when the close is more than {_Z_BAND} sd above its {_FAST}-bar mean, "
                  f"long when more than {_Z_BAND} sd below, else flat",
}
"""Each agent's rule in words, as the strategy fallback quotes it."""


def _trailing(values: FloatArray, window: int, stat: str) -> FloatArray:
    """``stat`` of the ``window`` values ending at each index (NaN before the first full window)."""
    out = np.full(values.size, np.nan)
    if values.size >= window:
        windows = np.lib.stride_tricks.sliding_window_view(values, window)
        if stat == "mean":
            out[window - 1:] = windows.mean(axis=1)
        elif stat == "pstd":
            out[window - 1:] = windows.std(axis=1)
        else:
            out[window - 1:] = windows.std(axis=1, ddof=1)
    return out


def as_closes(close: npt.ArrayLike) -> FloatArray:
    """``close`` as a float array, checked to be a 1-D series of positive finite prices (ValueError if not)."""
    c = np.asarray(close, dtype=np.float64)
    if c.ndim != 1 or not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("close must be a 1-D series of positive finite prices")
    return c


def momentum_positions(close: npt.ArrayLike) -> FloatArray:
    """Per bar: +1 when the 20-bar mean close is above the 60-bar mean, -1 below, 0 before 60 bars.

    Bar ``t`` uses closes ``<= t`` only.
    """
    c = as_closes(close)
    diff = _trailing(c, _FAST, "mean") - _trailing(c, _SLOW, "mean")
    return np.nan_to_num(np.sign(diff), nan=0.0)


def volatility_20(close: npt.ArrayLike) -> FloatArray:
    """Per bar: sample sd of the last 20 log returns ending at that bar (NaN before bar 20)."""
    c = as_closes(close)
    out = np.full(c.size, np.nan)
    if c.size > 1:
        out[1:] = _trailing(np.diff(np.log(c)), _FAST, "std")
    return out


def _median_volatility(vol: FloatArray) -> FloatArray:
    """Per bar: median of the known 20-bar vols over the last year (NaN with under 20 of them)."""
    padded = np.concatenate([np.full(_YEAR - 1, np.nan), vol])
    windows = np.lib.stride_tricks.sliding_window_view(padded, _YEAR)
    counts = np.isfinite(windows).sum(axis=1)
    out = np.full(vol.size, np.nan)
    enough = counts >= _MIN_VOL_HISTORY
    if enough.any():
        out[enough] = np.nanmedian(windows[enough], axis=1)
    return out


def vol_filtered_momentum_positions(close: npt.ArrayLike) -> FloatArray:
    """The conservative rule: momentum, but flat while the 20-bar vol is above its 1-year median.

    Flat too while the volatility history is too short to judge (under 40 bars).
    """
    c = as_closes(close)
    vol = volatility_20(c)
    calm = vol <= _median_volatility(vol)  # False where either side is NaN
    return np.where(calm, momentum_positions(c), 0.0)


def vol_scaled_momentum_positions(close: npt.ArrayLike) -> FloatArray:
    """The balanced rule: momentum sized by ``min(1, median 20-bar vol / current 20-bar vol)``, in [-1, 1]."""
    c = as_closes(close)
    vol = volatility_20(c)
    median = _median_volatility(vol)
    scale = np.divide(median, vol, out=np.ones_like(vol), where=vol > 0)
    scale = np.clip(np.nan_to_num(scale, nan=0.0), 0.0, 1.0)
    sized: FloatArray = momentum_positions(c) * scale
    return sized


def price_z_20(close: npt.ArrayLike) -> FloatArray:
    """Per bar: (close - 20-bar mean) / 20-bar population sd of the same closes; 0 when flat or too short.

    The same definition as the server's ``price_z_20`` feature.
    """
    c = as_closes(close)
    mean, sd = _trailing(c, _FAST, "mean"), _trailing(c, _FAST, "pstd")
    z = np.divide(c - mean, sd, out=np.zeros_like(c), where=np.nan_to_num(sd, nan=0.0) > 1e-12 * c)
    return np.nan_to_num(z, nan=0.0)


def mean_reversion_positions(close: npt.ArrayLike, band: float = _Z_BAND) -> FloatArray:
    """The contrarian rule: -1 when the 20-bar z-score is above ``band``, +1 below ``-band``, else 0."""
    z = price_z_20(close)
    return np.where(z > band, -1.0, np.where(z < -band, 1.0, 0.0))


_POSITION_RULES = {
    "conservative": vol_filtered_momentum_positions,
    "aggressive": momentum_positions,
    "balanced": vol_scaled_momentum_positions,
    "contrarian": mean_reversion_positions,
}


def rule_positions(close: npt.ArrayLike, agents: list[str] | None = None) -> dict[str, FloatArray]:
    """Each agent's rule-based target position at every bar (bar ``t`` sees closes ``<= t`` only)."""
    c = as_closes(close)
    return {agent: _POSITION_RULES[agent](c) for agent in (agents or list(STRATEGY_AGENTS))}


def rule_indicators(close: npt.ArrayLike) -> dict[str, float | None]:
    """The indicators the rules read, at the last bar: 20/60-bar means, 20-bar vol and its median, z-score.

    None where a window is not full yet (or for an empty series).
    """
    closes = np.asarray(close, dtype=np.float64)
    if not closes.size:
        return {"sma_20": None, "sma_60": None, "volatility_20": None, "median_volatility_20": None,
                "price_z_20": None}
    vol = volatility_20(closes)
    values = {"sma_20": _trailing(closes, _FAST, "mean")[-1], "sma_60": _trailing(closes, _SLOW, "mean")[-1],
              "volatility_20": vol[-1], "median_volatility_20": _median_volatility(vol)[-1],
              "price_z_20": price_z_20(closes)[-1]}
    return {k: (float(v) if np.isfinite(v) else None) for k, v in values.items()}
