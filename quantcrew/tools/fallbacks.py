"""Light answers computed on the agent side (numpy only) when the ML server cannot answer.

They are deliberately simple, deterministic and labelled as what they are: a tool that uses
one reports ``degraded: true`` and why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quantcrew.data.ohlcv import OHLCV

__all__ = ["regime_fallback"]

_VOL_WINDOW = 20
_TREND_WINDOW = 50
_VOLATILE_RATIO = 1.6   # short-window vol this many times the series' median vol
_TREND_SIGMAS = 0.5     # |50-bar return| beyond this many 50-bar sigmas is a trend


def regime_fallback(bars: OHLCV) -> dict[str, Any]:
    """Volatility / trend thresholds on the last bars.

    Rule, evaluated on the last bar with trailing windows only:
    volatile when 20-bar realised volatility exceeds 1.6x its median over the series;
    else bear / bull when the 50-bar log return is below / above -/+0.5 of its
    volatility-implied standard deviation; else sideways.
    """
    closes = np.asarray(bars.close, dtype=np.float64)
    rets = np.diff(np.log(closes))
    as_of = str(bars.timestamps[-1].astype("datetime64[D]")) if len(bars) else "?"
    if rets.size < _VOL_WINDOW + 1:
        return {"method_used": "fallback_rules", "current_label": "sideways", "as_of": as_of,
                "rule": f"too few bars ({len(bars)}) for a trend or volatility estimate", "labels": []}
    windows = np.lib.stride_tricks.sliding_window_view(rets, _VOL_WINDOW)
    vol = windows.std(axis=1, ddof=1)
    median_vol = float(np.median(vol))
    vol_now = float(vol[-1])
    trend_n = min(_TREND_WINDOW, rets.size)
    trend = float(rets[-trend_n:].sum())
    trend_sd = vol_now * np.sqrt(trend_n)
    if median_vol > 0 and vol_now > _VOLATILE_RATIO * median_vol:
        label, rule = "volatile", f"20-bar vol {vol_now:.4f} > {_VOLATILE_RATIO}x median {median_vol:.4f}"
    elif trend < -_TREND_SIGMAS * trend_sd:
        label, rule = "bear", f"{trend_n}-bar log return {trend:+.3f} below -{_TREND_SIGMAS} sd"
    elif trend > _TREND_SIGMAS * trend_sd:
        label, rule = "bull", f"{trend_n}-bar log return {trend:+.3f} above +{_TREND_SIGMAS} sd"
    else:
        label, rule = "sideways", f"{trend_n}-bar log return {trend:+.3f} within {_TREND_SIGMAS} sd, vol normal"
    return {
        "method_used": "fallback_rules",
        "current_label": label,
        "as_of": as_of,
        "rule": rule,
        "volatility_20": vol_now,
        "median_volatility_20": median_vol,
        "trend_log_return": trend,
        "trend_window": trend_n,
    }
