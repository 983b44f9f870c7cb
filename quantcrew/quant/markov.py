"""Markov-chain arithmetic in plain numpy, shared by the synthetic generator (agent side) and
the regime service (server side): the stationary distribution and the forward filter.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["forward_filter_numpy", "stationary_distribution"]

FloatArray = npt.NDArray[np.float64]


def stationary_distribution(transmat: FloatArray) -> FloatArray:
    """Stationary distribution of a row-stochastic matrix (uniform when it is not unique)."""
    k = transmat.shape[0]
    system = np.vstack([transmat.T - np.eye(k), np.ones(k)])
    rhs = np.zeros(k + 1)
    rhs[-1] = 1.0
    pi, *_ = np.linalg.lstsq(system, rhs, rcond=None)
    pi = np.clip(pi, 0.0, None)
    total = pi.sum()
    if not np.isfinite(total) or total <= 0:
        return np.full(k, 1.0 / k)
    return np.asarray(pi / total, dtype=np.float64)


def forward_filter_numpy(log_lik: FloatArray, transmat: FloatArray, prior: FloatArray) -> tuple[FloatArray, float]:
    """Filtered state probabilities by the forward recursion, one bar at a time (reference).

    Args:
        log_lik: Emission log-likelihoods, shape ``(T, K)``.
        transmat: Row-stochastic transition matrix, shape ``(K, K)``.
        prior: Distribution of the state of the first row, shape ``(K,)``.

    Returns:
        ``(probs, log_likelihood)``: probabilities of shape ``(T, K)`` (rows sum to 1) and the
        log-likelihood of the whole sequence under this prior.
    """
    t_len, k = log_lik.shape
    out = np.empty((t_len, k))
    predicted = np.asarray(prior, dtype=np.float64)
    total = 0.0
    with np.errstate(divide="ignore", under="ignore"):
        for t in range(t_len):
            joint = np.log(predicted) + log_lik[t]
            top = joint.max()
            weights = np.exp(joint - top)
            norm = weights.sum()
            out[t] = weights / norm
            total += float(top + np.log(norm))
            predicted = out[t] @ transmat
    return out, total
