"""Light answers computed on the agent side (numpy only) when the ML server cannot answer.

They are deliberately simple, deterministic and labelled as what they are: a tool that uses
one reports ``degraded: true`` and why.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from quantcrew.data.ohlcv import OHLCV

FloatArray = npt.NDArray[np.float64]

__all__ = ["anomaly_fallback", "cluster_fallback", "factor_fallback", "regime_fallback", "risk_fallback"]

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


def risk_fallback(returns: FloatArray, weights: list[float], levels: list[float], horizon_days: int) -> dict[str, Any]:
    """Historical VaR / CVaR of the portfolio and its sample-covariance volatility.

    ``returns`` holds per-asset simple returns (rows = periods). A horizon over one period
    scales the one-period figures by the square root of time (stated in ``rule``).
    """
    w = np.asarray(weights, dtype=np.float64)
    pnl = returns @ w
    cov = np.atleast_2d(np.cov(returns, rowvar=False, ddof=1)) if returns.shape[0] > 1 else np.zeros((w.size, w.size))
    vol = float(np.sqrt(max(float(w @ cov @ w), 0.0)))
    scale = float(np.sqrt(horizon_days))
    losses = -pnl
    estimates = []
    for level in levels:
        var = float(np.quantile(losses, level)) if losses.size else 0.0
        tail = losses[losses >= var]
        cvar = float(tail.mean()) if tail.size else var
        estimates.append({"method": "historical", "level": level, "horizon_days": horizon_days,
                          "var": var * scale, "cvar": cvar * scale})
    return {
        "method_used": "fallback_historical",
        "rule": "historical quantile of the portfolio's past returns; sample covariance"
                + (f"; sqrt-of-time scaling to {horizon_days} days" if horizon_days > 1 else ""),
        "n_observations": int(returns.shape[0]),
        "weights": [float(x) for x in w],
        "portfolio_volatility": vol,
        "estimates": estimates,
    }


def factor_fallback(returns: FloatArray, columns: list[str], n_components: int | None) -> dict[str, Any]:
    """Principal components of the sample covariance (eigen-decomposition, numpy only)."""
    cov = np.atleast_2d(np.cov(returns, rowvar=False, ddof=1))
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1]
    values, vectors = np.clip(values[order], 0.0, None), vectors[:, order]
    total = float(values.sum()) or 1.0
    ratio = values / total
    k = n_components or int(np.searchsorted(np.cumsum(ratio), 0.9) + 1)
    k = max(1, min(k, len(columns)))
    vectors = vectors[:, :k] * np.where(vectors[:, :k].sum(axis=0) < 0, -1.0, 1.0)  # sign: loadings sum positive
    return {
        "method_used": "fallback_pca",
        "rule": "eigen-decomposition of the sample covariance",
        "n_components": k,
        "explained_variance_ratio": [float(x) for x in ratio[:k]],
        "exposures": {c: [float(x) for x in vectors[i]] for i, c in enumerate(columns)},
    }


def cluster_fallback(returns: FloatArray, columns: list[str], threshold: float = 0.5) -> dict[str, Any]:
    """Groups assets whose return correlation exceeds ``threshold`` (single linkage, numpy only)."""
    corr = np.atleast_2d(np.corrcoef(returns, rowvar=False))
    corr = np.nan_to_num(corr, nan=0.0)
    n = len(columns)
    labels = list(range(n))
    for i in range(n):
        for j in range(i + 1, n):
            if corr[i, j] > threshold and labels[i] != labels[j]:
                old, new = labels[j], labels[i]
                labels = [new if x == old else x for x in labels]
    remap = {old: k for k, old in enumerate(dict.fromkeys(labels))}
    final = [remap[x] for x in labels]
    members: dict[str, list[str]] = {}
    for name, label in zip(columns, final, strict=True):
        members.setdefault(str(label), []).append(name)
    return {
        "method_used": "fallback_correlation_groups",
        "rule": f"assets joined when their return correlation exceeds {threshold} (single linkage)",
        "n_clusters": len(members),
        "labels": final,
        "members": members,
    }


def anomaly_fallback(bars: OHLCV, *, threshold: float = 3.0, window: int = 20, top_k: int = 5) -> dict[str, Any]:
    """Bars whose log return (or volume) is more than ``threshold`` trailing standard deviations out.

    The z-scores use the ``window`` bars BEFORE each bar only (no look-ahead).
    """
    closes = np.asarray(bars.close, dtype=np.float64)
    rets = np.diff(np.log(closes))
    dates = bars.iso_timestamps()[1:]
    if rets.size <= window:
        return {"method_used": "fallback_zscore", "rule": f"too few bars ({len(bars)}) for {window}-bar z-scores",
                "n_flagged": 0, "top": [], "current_z": None}
    past = np.lib.stride_tricks.sliding_window_view(rets[:-1], window)  # row i: rets[i .. i+window-1]
    mu, sd = past.mean(axis=1), past.std(axis=1, ddof=1)
    z = (rets[window:] - mu) / np.where(sd > 0, sd, np.nan)
    z = np.nan_to_num(z, nan=0.0)
    score = np.abs(z)
    if bars.volume.size and np.any(bars.volume != 0.0):  # zeros mean the source had no volume
        vol = np.asarray(bars.volume, dtype=np.float64)[1:]
        vpast = np.lib.stride_tricks.sliding_window_view(vol[:-1], window)
        vsd = vpast.std(axis=1, ddof=1)
        vz = np.nan_to_num((vol[window:] - vpast.mean(axis=1)) / np.where(vsd > 0, vsd, np.nan), nan=0.0)
        score = np.maximum(score, vz)
    kept = dates[window:]
    order = np.argsort(-score)[:top_k]
    top = [{"timestamp": kept[i], "z": float(score[i]), "log_return": float(rets[window + i])} for i in order]
    return {
        "method_used": "fallback_zscore",
        "rule": f"|return z-score| or volume z-score over {threshold} against the previous {window} bars",
        "n_scored": int(score.size),
        "n_flagged": int((score > threshold).sum()),
        "top": top,
        "current_z": float(score[-1]),
        "current_flagged": bool(score[-1] > threshold),
    }
