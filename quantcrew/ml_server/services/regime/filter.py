"""Filtering arithmetic of a Gaussian HMM, in numpy: no look-ahead, no hmmlearn internals.

hmmlearn's ``predict`` / ``predict_proba`` are smoothed (they use the whole sequence), so
labels come from :func:`forward_filter` instead: ``P(state_t | x_1..x_t)`` by the forward
recursion in log space, started from the chain's stationary distribution (the fitted
``startprob_`` of one training sequence is nearly one-hot and says nothing about where a
new window starts).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from quantcrew.quant.markov import forward_filter_numpy, stationary_distribution

__all__ = ["forward_filter", "forward_filter_numpy", "gaussian_log_likelihood", "stationary_distribution"]

FloatArray = npt.NDArray[np.float64]


def gaussian_log_likelihood(x: FloatArray, means: FloatArray, covars: FloatArray) -> FloatArray:
    """Log-density of every row of ``x`` under every state's Gaussian.

    Args:
        x: Observations, shape ``(T, d)``.
        means: State means, shape ``(K, d)``.
        covars: Full state covariances, shape ``(K, d, d)``.

    Returns:
        Shape ``(T, K)``.

    Raises:
        numpy.linalg.LinAlgError: a covariance is not positive definite.
    """
    t, d = x.shape
    out = np.empty((t, means.shape[0]))
    for k in range(means.shape[0]):
        chol = np.linalg.cholesky(covars[k])
        solved = np.linalg.solve(chol, (x - means[k]).T)
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = -0.5 * ((solved**2).sum(axis=0) + log_det + d * np.log(2.0 * np.pi))
    return out


def forward_filter(log_lik: FloatArray, transmat: FloatArray, prior: FloatArray) -> tuple[FloatArray, float]:
    """Filtered state probabilities ``P(state_t | obs_1..t)``.

    Runs hmmlearn's compiled forward pass (``_hmmc.forward_log``: the same recursion in C++,
    about 50x faster than a Python loop over bars) and normalises each row of the log forward
    lattice, which is exactly the filtered distribution. hmmlearn's private module is used for
    the arithmetic only, never for smoothing; :func:`forward_filter_numpy` is the reference
    implementation, used when that module is missing and checked against it in the tests;
    arguments and return value are those of :func:`forward_filter_numpy`.
    """
    try:
        from hmmlearn import _hmmc
    except ImportError:  # pragma: no cover - hmmlearn layout changed: use the reference loop
        return forward_filter_numpy(log_lik, transmat, prior)
    with np.errstate(divide="ignore", under="ignore"):
        total, lattice = _hmmc.forward_log(
            np.ascontiguousarray(prior, dtype=np.float64),
            np.ascontiguousarray(transmat, dtype=np.float64),
            np.ascontiguousarray(log_lik, dtype=np.float64),
        )
        top = lattice.max(axis=1, keepdims=True)
        probs = np.exp(lattice - top)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs, float(total)
