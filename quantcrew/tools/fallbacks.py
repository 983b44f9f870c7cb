"""Light answers computed on the agent side (numpy only) when the ML server cannot answer.

They are deliberately simple, deterministic and labelled as what they are: a tool that uses
one reports ``degraded: true`` and why. The strategy agents' position rules they quote live in
:mod:`quantcrew.tools.rules`; their names are importable from here too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quantcrew.data.ohlcv import OHLCV
from quantcrew.tools.rules import (
    RULE_DESCRIPTIONS,
    STRATEGY_AGENTS,
    FloatArray,
    as_closes,
    mean_reversion_positions,
    momentum_positions,
    price_z_20,
    rule_indicators,
    rule_positions,
    vol_filtered_momentum_positions,
    vol_scaled_momentum_positions,
    volatility_20,
)

__all__ = [
    "STRATEGY_AGENTS",
    "anomaly_fallback",
    "cluster_fallback",
    "ensemble_fallback",
    "execution_fallback",
    "factor_fallback",
    "mean_reversion_positions",
    "momentum_positions",
    "price_z_20",
    "regime_fallback",
    "risk_fallback",
    "rule_positions",
    "strategy_fallback",
    "vol_filtered_momentum_positions",
    "vol_scaled_momentum_positions",
    "volatility_20",
]

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


# -- strategy signals: the rules of quantcrew.tools.rules at the last bar ---------------------------


def _label(target: float) -> str:
    return "long" if target > 0 else "short" if target < 0 else "flat"


def strategy_fallback(bars: OHLCV, agents: list[str] | None = None) -> dict[str, Any]:
    """Rule-based signals for the agents at the last bar, in place of the RL policies.

    aggressive and balanced follow momentum (balanced sized by inverse volatility),
    conservative follows momentum only while volatility is at or below its 1-year median,
    contrarian fades 1.5-sd deviations from the 20-bar mean. Every rule reads bars up to
    the last one only; the position held now is not used.
    """
    chosen = agents or list(STRATEGY_AGENTS)
    closes = np.asarray(bars.close, dtype=np.float64)
    as_of = str(bars.timestamps[-1].astype("datetime64[D]")) if len(bars) else "?"
    positions = rule_positions(closes, chosen) if closes.size else {a: np.zeros(1) for a in chosen}
    signals = []
    for agent in chosen:
        target = float(positions[agent][-1])
        signals.append({"agent": agent, "source": "rules", "rule": RULE_DESCRIPTIONS[agent],
                        "action_label": _label(target), "target_position": target})
    return {
        "method_used": "fallback_rules",
        "as_of": as_of,
        "n_bars": len(bars),
        "signals": signals,
        "indicators": rule_indicators(closes),
        "regime": regime_fallback(bars)["current_label"] if len(bars) else None,
    }


_ENSEMBLE_LOOKBACKS = (5, 20, 60)
_CLASSES = ("down", "flat", "up")


def ensemble_fallback(bars: OHLCV) -> dict[str, Any]:
    """Three trend "members" (5, 20 and 60-bar returns in units of their expected sd) as a stand-in ensemble.

    Each member's probabilities are ``softmax([-z, 0, z])`` of its return z-score, so a flat
    market gives flat the most weight; the agreement, consensus, divergence and entropy are
    computed from these members by the same formulas the server uses (docs/features.md).
    """
    from quantcrew.quant.calibration import uncertainty  # numpy only

    c = as_closes(bars.close)
    vol = volatility_20(c)
    if c.size <= max(_ENSEMBLE_LOOKBACKS) or not np.isfinite(vol[-1]) or vol[-1] <= 0:
        raise ValueError(f"need more than {max(_ENSEMBLE_LOOKBACKS)} bars with price movement for the fallback")
    z = np.array([np.log(c[-1] / c[-1 - k]) / (vol[-1] * np.sqrt(k)) for k in _ENSEMBLE_LOOKBACKS])
    logits = np.column_stack([-z, np.zeros_like(z), z])
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    u = uncertainty(probs[:, None, :])
    p = u.probs[0]
    k = int(np.argmax(p))
    return {
        "symbol": bars.symbol, "as_of": str(bars.timestamps[-1].astype("datetime64[D]")), "signal": _CLASSES[k],
        "position": k - 1,
        "probabilities": {c_: float(v) for c_, v in zip(_CLASSES, p, strict=True)}, "confidence": float(p[k]),
        "agreement_score": float(u.agreement_score[0]), "consensus_strength": float(u.consensus_strength[0]),
        "divergence_metric": float(u.divergence_metric[0]), "predictive_entropy": float(u.predictive_entropy[0]),
        "members": {f"trend_{k_}": float(z_) for k_, z_ in zip(_ENSEMBLE_LOOKBACKS, z, strict=True)},
        "method_used": "rule: softmax([-z, 0, z]) of 5/20/60-bar return z-scores (uncalibrated)",
    }


_TARGET_DAILY_VOL = 0.01


def execution_fallback(bars: OHLCV, signal: str, confidence: float) -> dict[str, Any]:
    """Volatility-targeted size: edge x (1% daily vol / realised vol), capped at 1, entered now.

    ``edge`` is how far the confidence is above a coin flip among three classes, rescaled to
    [0, 1]. The interval is the spread of the sizes given by 10, 20 and 60-bar volatility.
    """
    c = as_closes(bars.close)
    r = np.diff(np.log(c))
    if r.size < 60:
        raise ValueError("need at least 61 bars for the execution fallback")
    direction = {"down": -1, "flat": 0, "up": 1}[signal]
    edge = float(np.clip((confidence - 1.0 / 3.0) * 1.5, 0.0, 1.0)) if direction else 0.0
    vols = np.array([r[-w:].std(ddof=1) for w in (10, 20, 60)])
    sizes = np.clip(edge * _TARGET_DAILY_VOL / np.maximum(vols, 1e-8), 0.0, 1.0)
    size = {"mean": float(sizes.mean()), "std": float(sizes.std()), "lower": float(sizes.min()),
            "upper": float(sizes.max())}
    return {
        "symbol": bars.symbol, "as_of": str(bars.timestamps[-1].astype("datetime64[D]")), "direction": direction,
        "size": size,
        "timing": "now", "wait_probability": None, "target_fraction": direction * size["mean"],
        "method_used": f"rule: edge x {_TARGET_DAILY_VOL:.0%} daily vol target / realised vol (10/20/60 bars)",
    }
