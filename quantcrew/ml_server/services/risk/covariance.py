"""Covariance of asset returns: sample, shrunk toward a scaled identity, or toward constant correlation.

* ``sample``: the unbiased sample covariance (ddof = 1). Refused when it is singular or
  nearly so (no more observations than assets, or condition number over 1e12): use a shrunk
  estimator there.
* ``ledoit_wolf`` / ``oas``: scikit-learn's Ledoit-Wolf (2004, "A well-conditioned estimator
  for large-dimensional covariance matrices") and Chen et al.'s Oracle Approximating
  Shrinkage, both shrinking the (1/n) sample covariance toward ``mean(diag) * I``.
* ``constant_correlation``: Ledoit & Wolf (2004, "Honey, I shrunk the sample covariance
  matrix"): the target keeps each variance and sets every correlation to the average one;
  the optimal intensity is ``(pi - rho) / gamma / n`` clipped to [0, 1] (their covCor.m).

Shrunk estimators accept more assets than observations, which is their point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.risk import CovarianceMethod

__all__ = [
    "MAX_ABS_RETURN",
    "MAX_SAMPLE_CONDITION",
    "CovarianceEstimate",
    "check_return_magnitude",
    "constant_correlation_shrinkage",
    "estimate_covariance",
]

FloatArray = npt.NDArray[np.float64]

MAX_SAMPLE_CONDITION = 1e12
"""Condition number above which the sample covariance is refused as near-singular."""
MAX_ABS_RETURN = 1e12
"""Largest absolute value accepted as a return: far beyond any real one, small enough that
fourth powers (the shrinkage estimators) cannot overflow."""


@dataclass(frozen=True)
class CovarianceEstimate:
    """A covariance estimate and its conditioning.

    Attributes:
        covariance: (k, k) matrix, per period.
        mean: (k,) sample mean per period.
        shrinkage: Intensity in [0, 1]; None for the sample estimator.
        condition_number: Largest / smallest eigenvalue (``inf`` when singular).
        min_eigenvalue: Smallest eigenvalue.
        method: Estimator used.
    """

    covariance: FloatArray
    mean: FloatArray
    shrinkage: float | None
    condition_number: float
    min_eigenvalue: float
    method: CovarianceMethod

    @property
    def volatilities(self) -> FloatArray:
        """Per-asset standard deviation."""
        vol: FloatArray = np.sqrt(np.clip(np.diag(self.covariance), 0.0, None))
        return vol

    @property
    def correlation(self) -> FloatArray:
        """Correlation matrix implied by the covariance (unit diagonal)."""
        vol = self.volatilities
        with np.errstate(divide="ignore", invalid="ignore"):
            corr: FloatArray = self.covariance / np.outer(vol, vol)
        corr = np.clip(np.nan_to_num(corr, nan=0.0), -1.0, 1.0)
        np.fill_diagonal(corr, 1.0)
        return corr


def estimate_covariance(
    returns: FloatArray, method: CovarianceMethod = "ledoit_wolf", *, columns: Sequence[str] | None = None,
) -> CovarianceEstimate:
    """Estimate the covariance of ``returns`` (n_obs, n_assets).

    Args:
        returns: Periodic returns, one column per asset, one row per period.
        method: ``sample``, ``ledoit_wolf``, ``oas`` or ``constant_correlation``.
        columns: Asset names, used in error messages only.

    Raises:
        InvalidInputError: (field ``data``) fewer than 2 rows, a constant column (named), or for
            ``sample`` a singular or near-singular estimate.
    """
    x = np.asarray(returns, dtype=np.float64)
    if x.ndim != 2:
        raise InvalidInputError("data: returns must be a table (rows x assets)",
                                details=[{"loc": ["data", "values"], "msg": "expected 2-D"}])
    n, k = x.shape
    names = list(columns) if columns is not None else [f"column {j}" for j in range(k)]
    if n < 2:
        raise InvalidInputError(
            f"data has {n} rows; a covariance needs at least 2",
            details=[{"loc": ["data", "values"], "msg": "need at least 2 rows", "rows": n}])
    check_return_magnitude(x)
    std = x.std(axis=0)
    scale = np.maximum(np.abs(x).max(axis=0), np.finfo(np.float64).tiny)
    flat = [names[j] for j in np.flatnonzero(std <= 1e-12 * scale)]
    if flat:
        raise InvalidInputError(
            f"data: constant column(s) {', '.join(repr(c) for c in flat)}: a column that never varies has no "
            "variance to estimate; drop it",
            details=[{"loc": ["data", "columns"], "msg": "constant column", "columns": flat}])
    mean = x.mean(axis=0)
    shrinkage: float | None
    if method == "sample":
        if n <= k:
            raise InvalidInputError(
                f"data: {n} observations for {k} assets: the sample covariance is singular when there are not "
                "more observations than assets; use method ledoit_wolf or oas",
                details=[{"loc": ["data", "values"], "msg": "sample covariance singular",
                          "rows": n, "columns": k}])
        cov = np.cov(x, rowvar=False, ddof=1).reshape(k, k)
        shrinkage = None
    elif method == "ledoit_wolf":
        cov, shrinkage = _sklearn_shrunk(x, "ledoit_wolf")
    elif method == "oas":
        cov, shrinkage = _sklearn_shrunk(x, "oas")
    elif method == "constant_correlation":
        cov, shrinkage = constant_correlation_shrinkage(x)
    else:  # pragma: no cover - the Literal makes this unreachable from the wire
        raise InvalidInputError(f"method: unknown covariance method {method!r}",
                                details=[{"loc": ["method"], "msg": "unknown method"}])
    cov = (cov + cov.T) / 2.0
    if not np.all(np.isfinite(cov)):
        raise InvalidInputError(
            "data: the covariance overflows (returns too large to square); send returns as fractions, e.g. 0.01",
            details=[{"loc": ["data", "values"], "msg": "covariance not finite"}])
    eig = np.linalg.eigvalsh(cov)
    lo, hi = float(eig[0]), float(eig[-1])
    cond = hi / lo if lo > 0.0 else float("inf")
    if method == "sample" and cond > MAX_SAMPLE_CONDITION:
        raise InvalidInputError(
            f"data: the sample covariance is near-singular (condition number {cond:.3g} > 1e12; some columns are "
            "almost linear combinations of others); use method ledoit_wolf or oas",
            details=[{"loc": ["data", "values"], "msg": "sample covariance near-singular",
                      "condition_number": cond if np.isfinite(cond) else None}])
    return CovarianceEstimate(cov, mean, shrinkage, cond, lo, method)


def check_return_magnitude(x: FloatArray) -> None:
    """Refuse non-finite values and values too large to be returns (field ``data``)."""
    if not np.all(np.isfinite(x)):
        raise InvalidInputError("data holds non-finite values",
                                details=[{"loc": ["data", "values"], "msg": "non-finite values"}])
    biggest = float(np.abs(x).max()) if x.size else 0.0
    if biggest > MAX_ABS_RETURN:
        raise InvalidInputError(
            f"data holds a value of {biggest:.3g}, too large for a return; send periodic simple returns as "
            "fractions (0.01 = 1 %)",
            details=[{"loc": ["data", "values"], "msg": "value too large for a return", "max_abs": biggest}])


def constant_correlation_shrinkage(returns: FloatArray) -> tuple[FloatArray, float]:
    """Ledoit & Wolf (2004) shrinkage of the (1/n) sample covariance toward constant correlation.

    With ``x`` the demeaned returns (n x k), ``S = x'x / n``, ``r_bar`` the mean off-diagonal
    correlation and target ``F_ij = r_bar sqrt(S_ii S_jj)`` (``F_ii = S_ii``):

    * ``pi = sum_ij mean_t((x_ti x_tj - S_ij)^2)``
    * ``rho = sum_i pi_ii + r_bar sum_{i != j} sqrt(S_jj / S_ii) theta_ii,ij`` with
      ``theta_ii,ij = mean_t((x_ti^2 - S_ii)(x_ti x_tj - S_ij))``
    * ``gamma = ||S - F||_F^2``; intensity ``clip((pi - rho) / gamma / n, 0, 1)``.

    Returns:
        ``(delta F + (1 - delta) S, delta)``.
    """
    x = np.asarray(returns, dtype=np.float64)
    n, k = x.shape
    x = x - x.mean(axis=0)
    sample = x.T @ x / n
    var = np.diag(sample).copy()
    sd = np.sqrt(var)
    if k == 1:
        return sample, 0.0
    corr = sample / np.outer(sd, sd)
    r_bar = (corr.sum() - k) / (k * (k - 1))
    prior = r_bar * np.outer(sd, sd)
    np.fill_diagonal(prior, var)
    y = x * x
    pi_mat = y.T @ y / n - sample * sample
    pi_hat = float(pi_mat.sum())
    theta = (x**3).T @ x / n - var[:, None] * sample
    np.fill_diagonal(theta, 0.0)
    rho_hat = float(np.trace(pi_mat) + r_bar * np.sum(np.outer(1.0 / sd, sd) * theta))
    gamma_hat = float(np.sum((sample - prior) ** 2))
    if gamma_hat <= 0.0:
        # the sample already has constant correlation (e.g. two assets): any intensity gives the same matrix
        return sample, 0.0
    delta = float(np.clip((pi_hat - rho_hat) / gamma_hat / n, 0.0, 1.0))
    return delta * prior + (1.0 - delta) * sample, delta


def _sklearn_shrunk(x: FloatArray, which: str) -> tuple[FloatArray, float]:
    from sklearn.covariance import OAS, LedoitWolf  # server-side only

    try:
        est = LedoitWolf().fit(x) if which == "ledoit_wolf" else OAS().fit(x)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        raise InvalidInputError(f"data: {which} covariance failed: {exc}",
                                details=[{"loc": ["data", "values"], "msg": str(exc)}]) from exc
    cov: FloatArray = np.asarray(est.covariance_, dtype=np.float64)
    return cov, float(est.shrinkage_)
