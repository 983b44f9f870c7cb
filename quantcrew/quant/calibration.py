"""Probabilities from member logits, their calibration, and the ensemble's uncertainty metrics.

numpy only. Logits and probabilities of ``K`` members (or ``K`` MC-dropout samples) come as
``(K, N, C)`` arrays; probabilities of one source as ``(N, C)``; labels as ``(N,)`` integers in
``[0, C)``.

- :func:`mean_probs` averages the members' temperature-scaled softmax (averaging
  probabilities, not logits, is what makes an ensemble's spread show in its confidence);
- :func:`fit_temperature` picks the temperature minimising that average's NLL (a grid on
  ``log T`` refined by golden-section search, deterministic);
- :func:`expected_calibration_error`, :func:`brier_score`, :func:`negative_log_likelihood` and
  :func:`reliability_bins` score probabilities against labels;
- :func:`uncertainty` reduces member probabilities to the agreement / consensus / divergence /
  entropy metrics of the wire contract;
- :func:`fit_mixture_weights` mixes several sources (architectures) on a simplex grid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Uncertainty",
    "brier_score",
    "expected_calibration_error",
    "fit_mixture_weights",
    "fit_temperature",
    "mean_probs",
    "negative_log_likelihood",
    "reliability_bins",
    "softmax",
    "uncertainty",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_PROB_ATOL = 1e-3  # how far a row of probabilities may sum from 1 (float32 sums, rounding)
_NLL_FLOOR = 1e-12
_GRID_POINTS = 41  # log-T grid of fit_temperature before the golden-section refinement
_GOLDEN_ITERATIONS = 60
_MIXTURE_MAX_POINTS = 2_000_000  # simplex grid points fit_mixture_weights will enumerate


def _float_array(a: Any, name: str) -> FloatArray:
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be an array of numbers") from exc
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    if not np.isfinite(arr).all():  # the method: np.all adds ~2 us of dispatch per call
        raise ValueError(f"{name} must hold finite numbers")
    return arr


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not math.isfinite(t) or t <= 0.0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return t


def _labels(labels: Any, n: int, n_classes: int, name: str = "labels") -> IntArray:
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    integral = arr.dtype.kind in "iu" or (
        arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr))) and bool(np.all(arr == np.round(arr)))
    )
    if not integral:
        raise ValueError(f"{name} must hold integer class indices, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if out.min() < 0 or out.max() >= n_classes:
        raise ValueError(f"{name} must be in [0, {n_classes}), got values in [{out.min()}, {out.max()}]")
    return out


def _probs(probs: Any, name: str = "probs") -> FloatArray:
    arr = _float_array(probs, name)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"{name} must be (N, C) with C >= 2, got shape {arr.shape}")
    _check_simplex(arr, name)
    return arr


def _check_simplex(arr: FloatArray, name: str) -> None:
    if arr.min() < 0.0 or arr.max() > 1.0 + _PROB_ATOL:
        raise ValueError(f"{name} must hold probabilities in [0, 1]")
    # np.allclose's comparison without its overhead (it is on every ensemble predict): NaN fails it too
    if not bool((np.abs(arr.sum(axis=-1) - 1.0) <= _PROB_ATOL).all()):
        raise ValueError(f"{name} rows must sum to 1")


def _weights(weights: Any, k: int) -> FloatArray:
    """Normalised weights over ``k`` members (uniform when None)."""
    if weights is None:
        uniform: FloatArray = np.full(k, 1.0 / k)
        return uniform
    w = _float_array(weights, "weights")
    if w.shape != (k,):
        raise ValueError(f"weights must have shape ({k},), one per member, got {w.shape}")
    if w.min() < 0.0 or w.sum() <= 0.0:
        raise ValueError("weights must be >= 0 with a positive sum")
    normalised: FloatArray = w / w.sum()
    return normalised


def softmax(logits: np.ndarray, temperature: float = 1.0) -> FloatArray:
    """Softmax of ``logits / temperature`` over the last axis (numerically stable).

    Raises:
        ValueError: empty or non-finite logits, or ``temperature`` <= 0.
    """
    z = _float_array(logits, "logits") / _check_temperature(temperature)
    if z.ndim < 1:
        raise ValueError("logits must have at least one axis")
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: FloatArray = e / e.sum(axis=-1, keepdims=True)
    return out


def mean_probs(logits: np.ndarray, temperature: float = 1.0, weights: np.ndarray | None = None) -> FloatArray:
    """Weighted mean over members of ``softmax(logits / T)``: ``(K, N, C)`` -> ``(N, C)``.

    Args:
        logits: ``(K, N, C)`` logits of ``K`` members or dropout samples.
        temperature: ``T`` > 0, shared by the members.
        weights: ``(K,)`` non-negative member weights (normalised here); uniform when None.

    Raises:
        ValueError: misshapen or non-finite inputs, ``temperature`` <= 0, bad weights.
    """
    arr = _float_array(logits, "logits")
    if arr.ndim != 3:
        raise ValueError(f"logits must be (K, N, C), got shape {arr.shape}")
    w = _weights(weights, arr.shape[0])
    out: FloatArray = np.tensordot(w, softmax(arr, temperature), axes=1)
    return out


def _nll_of_temperature(logits: FloatArray, labels: IntArray, log_t: float) -> float:
    probs = mean_probs(logits, math.exp(log_t))
    return float(-np.mean(np.log(np.maximum(probs[np.arange(labels.size), labels], _NLL_FLOOR))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature ``T`` minimising ``NLL(mean_probs(logits, T), labels)`` within ``bounds``.

    A grid on ``log T`` finds the basin, golden-section search refines it; the result is
    deterministic.

    Args:
        logits: ``(K, N, C)`` member logits or ``(N, C)`` logits of one model.
        labels: ``(N,)`` integer labels.
        bounds: ``(low, high)`` with ``0 < low < high``.

    Raises:
        ValueError: misshapen inputs, labels out of range, or bad bounds.
    """
    arr = _float_array(logits, "logits")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[-1] < 2:
        raise ValueError(f"logits must be (K, N, C) or (N, C) with C >= 2, got shape {np.shape(logits)}")
    y = _labels(labels, arr.shape[1], arr.shape[2])
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 < lo < hi):
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds!r}")
    grid = np.linspace(math.log(lo), math.log(hi), _GRID_POINTS)
    values = [_nll_of_temperature(arr, y, g) for g in grid]
    best = int(np.argmin(values))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = _nll_of_temperature(arr, y, c), _nll_of_temperature(arr, y, d)
    for _ in range(_GOLDEN_ITERATIONS):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = _nll_of_temperature(arr, y, c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = _nll_of_temperature(arr, y, d)
    log_t, value = (c, fc) if fc <= fd else (d, fd)
    if values[best] < value:  # the refinement never does worse than the grid
        log_t = float(grid[best])
    return float(min(max(math.exp(log_t), lo), hi))


def _top_label(probs: FloatArray, labels: IntArray) -> tuple[FloatArray, FloatArray]:
    confidence: FloatArray = probs.max(axis=1)
    correct: FloatArray = (probs.argmax(axis=1) == labels).astype(np.float64)
    return confidence, correct


def _bin_index(confidence: FloatArray, bins: int) -> IntArray:
    """Bins ``(k/bins, (k+1)/bins]`` (the first also takes 0)."""
    idx: IntArray = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    return idx


def _check_bins(bins: int) -> None:
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE: over equal-width confidence bins, the count-weighted ``|accuracy - confidence|``.

    Raises:
        ValueError: misshapen probabilities, labels out of range, ``bins`` < 1.
    """
    p = _probs(probs)
    y = _labels(labels, p.shape[0], p.shape[1])
    _check_bins(bins)
    confidence, correct = _top_label(p, y)
    idx = _bin_index(confidence, bins)
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    gap = np.bincount(idx, weights=correct - confidence, minlength=bins)
    # sum over bins of (n_b / N) * |mean(correct - confidence) in b| = sum_b |sum_b(correct - confidence)| / N
    return float(np.abs(gap[counts > 0]).sum() / p.shape[0])


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of ``sum_c (p_c - onehot_c)^2`` (0 best, 2 worst)."""
    p = _probs(probs)
    y = _labels(labels, p.shape[0], p.shape[1])
    onehot = np.zeros_like(p)
    onehot[np.arange(y.size), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p(true class)``, probabilities clipped at 1e-12."""
    p = _probs(probs)
    y = _labels(labels, p.shape[0], p.shape[1])
    return float(-np.mean(np.log(np.maximum(p[np.arange(y.size), y], _NLL_FLOOR))))


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """One entry per non-empty confidence bin: ``lo``, ``hi``, ``count``, ``confidence``, ``accuracy``.

    ``confidence`` is the mean top-class probability of the rows in the bin, ``accuracy`` the
    share of them whose top class is right; bins are those of :func:`expected_calibration_error`.
    """
    p = _probs(probs)
    y = _labels(labels, p.shape[0], p.shape[1])
    _check_bins(bins)
    confidence, correct = _top_label(p, y)
    idx = _bin_index(confidence, bins)
    counts = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=confidence, minlength=bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=bins)
    return [
        {
            "lo": b / bins,
            "hi": (b + 1) / bins,
            "count": int(counts[b]),
            "confidence": float(conf_sum[b] / counts[b]),
            "accuracy": float(acc_sum[b] / counts[b]),
        }
        for b in range(bins)
        if counts[b] > 0
    ]


@dataclass(frozen=True)
class Uncertainty:
    """What the members' probabilities say about one prediction each, all but ``probs`` in [0, 1].

    Attributes:
        probs: ``(N, C)`` weighted mean of the members' probabilities.
        agreement_score: ``(N,)`` weighted share of members whose top class is the ensemble's.
        consensus_strength: ``(N,)`` weighted mean probability the members give the ensemble's class.
        divergence_metric: ``(N,)`` ``(H(mean) - weighted mean of member entropies) / log C``:
            the mutual information (generalised Jensen-Shannon divergence) of the members.
        predictive_entropy: ``(N,)`` ``H(mean) / log C``.
    """

    probs: FloatArray
    agreement_score: FloatArray
    consensus_strength: FloatArray
    divergence_metric: FloatArray
    predictive_entropy: FloatArray


def _entropy(p: FloatArray) -> FloatArray:
    """Entropy (nats) over the last axis, with 0 log 0 = 0."""
    safe = np.where(p > 0.0, p, 1.0)
    out: FloatArray = -np.sum(p * np.log(safe), axis=-1)
    return out


def _weighted(w: FloatArray, x: FloatArray) -> FloatArray:
    """``sum_k w[k] * x[k]`` over the first axis: one ``dot`` (``np.tensordot`` costs ~18 us of Python
    around the same product; this runs on every ensemble predict)."""
    out: FloatArray = np.dot(w, x.reshape(x.shape[0], -1)).reshape(x.shape[1:])
    return out


def uncertainty(member_probs: np.ndarray, weights: np.ndarray | None = None) -> Uncertainty:
    """Reduce ``(K, N, C)`` member probabilities to the ensemble's probabilities and uncertainty.

    Args:
        member_probs: Each member's (or dropout sample's) probabilities.
        weights: ``(K,)`` non-negative member weights; uniform when None.

    Raises:
        ValueError: misshapen or non-probability input, bad weights.
    """
    p = _float_array(member_probs, "member_probs")
    if p.ndim != 3 or p.shape[2] < 2:
        raise ValueError(f"member_probs must be (K, N, C) with C >= 2, got shape {p.shape}")
    _check_simplex(p, "member_probs")
    w = _weights(weights, p.shape[0])
    mean = _weighted(w, p)
    chosen = mean.argmax(axis=1)
    rows = np.arange(p.shape[1])
    agreement = _weighted(w, (p.argmax(axis=2) == chosen[None, :]).astype(np.float64))
    consensus = _weighted(w, p[:, rows, chosen])
    log_c = math.log(p.shape[2])
    h_mean = _entropy(mean)
    mutual = h_mean - _weighted(w, _entropy(p))
    return Uncertainty(
        probs=mean,
        agreement_score=agreement,
        consensus_strength=consensus,
        divergence_metric=np.clip(mutual / log_c, 0.0, 1.0),
        predictive_entropy=np.clip(h_mean / log_c, 0.0, 1.0),
    )


def _simplex_grid(k: int, steps: int) -> FloatArray:
    """All weight vectors over ``k`` sources with entries in multiples of ``1 / steps`` (stars and bars)."""
    rows = []
    for bars in itertools.combinations(range(steps + k - 1), k - 1):
        edges = (-1, *bars, steps + k - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return np.asarray(rows, dtype=np.float64) / steps


def fit_mixture_weights(probs: Sequence[np.ndarray], labels: np.ndarray, step: float = 0.05) -> FloatArray:
    """Simplex weights minimising the NLL of ``sum_k w_k probs_k`` on a grid of spacing ``step``.

    Ties (within 1e-12) go to the most even weights (smallest sum of squares). One source gets
    ``[1.0]``.

    Args:
        probs: ``K`` arrays ``(N, C)``, one per source, rows aligned with ``labels``.
        labels: ``(N,)`` integer labels.
        step: Grid spacing; ``1 / step`` must be a whole number.

    Raises:
        ValueError: no sources, sources of different shapes, labels out of range, a bad step,
            or a grid too large to enumerate.
    """
    if isinstance(probs, np.ndarray) and probs.ndim == 3:
        sources = [probs[k] for k in range(probs.shape[0])]
    else:
        sources = list(probs)
    if not sources:
        raise ValueError("probs must hold at least one source")
    arrays = [_probs(p, f"probs[{k}]") for k, p in enumerate(sources)]
    shape = arrays[0].shape
    for k, arr in enumerate(arrays):
        if arr.shape != shape:
            raise ValueError(f"probs[{k}] has shape {arr.shape}, probs[0] has {shape}")
    y = _labels(labels, shape[0], shape[1])
    step_f = float(step)
    if not (math.isfinite(step_f) and 0.0 < step_f <= 1.0):
        raise ValueError(f"step must be in (0, 1], got {step!r}")
    steps = round(1.0 / step_f)
    if abs(steps * step_f - 1.0) > 1e-9:
        raise ValueError(f"1 / step must be a whole number, got step={step!r}")
    k = len(arrays)
    if k == 1:
        return np.ones(1)
    if math.comb(steps + k - 1, k - 1) > _MIXTURE_MAX_POINTS:
        raise ValueError(f"a step of {step} over {k} sources makes a grid too large to search; use a larger step")
    grid = _simplex_grid(k, steps)
    # the mixture's probability of the true class is linear in the weights: score every grid point at once
    true_probs = np.stack([arr[np.arange(y.size), y] for arr in arrays])  # (K, N)
    nll = np.empty(grid.shape[0])
    chunk = max(1, 4_000_000 // max(y.size, 1))
    for start in range(0, grid.shape[0], chunk):
        mixed = grid[start : start + chunk] @ true_probs
        nll[start : start + chunk] = -np.mean(np.log(np.maximum(mixed, _NLL_FLOOR)), axis=1)
    candidates = np.flatnonzero(nll <= nll.min() + 1e-12)
    evenness = np.sum(grid[candidates] ** 2, axis=1)
    out: FloatArray = grid[candidates[int(np.argmin(evenness))]]
    return out
