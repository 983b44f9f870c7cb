"""Fitting Gaussian HMMs with restarts, failure handling, regularisation and BIC (hmmlearn).

Each restart starts EM from a split of the bars by their volatility level: a 1-D k-means of
the key column (the range, else the realised volatility, else the absolute return) smoothed
over 10 bars, started from equal quantiles (restart 0) or random ones (restart ``j``, drawn
with ``seed + j``), with a sticky transition matrix. hmmlearn's own k-means start on the raw
features tends to split days by return sign, and an unsmoothed split rarely finds a short,
rare regime: with it, four restarts missed the 4-state optimum on 2 of 15 synthetic markets.
A restart whose fit raises (covariance not positive definite, NaN) is retried once with a
stronger covariance floor and prior, then skipped.

Convergence is judged here, not by hmmlearn's monitor (which reports "converged" when it
merely ran out of iterations): a fit converged when its last EM step changed the
log-likelihood by less than ``tol``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from hmmlearn.hmm import GaussianHMM

from quantcrew.ml_server.services.regime.features import DEGENERATE_STD, FeatureMatrix

__all__ = ["HMMFit", "ModelChoice", "fit_restarts", "is_usable", "n_parameters", "select_model"]

FloatArray = npt.NDArray[np.float64]

_STICKY = 0.95  # initial self-transition probability
_SMOOTH = 10  # bars of the moving average that seeds the initial split
_MIN_COVAR = 1e-3  # covariance floor, in standardised feature units
_RETRY_MIN_COVAR = 1e-2
_RETRY_COVARS_PRIOR = 0.1
_FIT_ERRORS = (ValueError, np.linalg.LinAlgError, FloatingPointError)


@dataclass(frozen=True)
class HMMFit:
    """The best restart for one state count.

    Attributes:
        model: The fitted hmmlearn model.
        n_states: Its number of states.
        log_likelihood: Log-likelihood of the (standardised) training features.
        converged: Whether EM stopped because the likelihood stopped improving.
        seed: Seed of the winning restart.
    """

    model: GaussianHMM
    n_states: int
    log_likelihood: float
    converged: bool
    seed: int


@dataclass(frozen=True)
class ModelChoice:
    """The model BIC chose, with what is needed to rebuild its features on new bars.

    Attributes:
        fit: The winning fit.
        transform: Volatility transform of its features.
        log_likelihood: Log-likelihood of the raw (untransformed, unscaled) features.
        bic: BIC per state count tried under that transform.
        mean: Feature means used to standardise.
        scale: Feature scales used to standardise.
        floors: Floors of the log transform.
        features: The standardised training features the model was fitted on, ``(T - 1, d)``.
    """

    fit: HMMFit
    transform: str
    log_likelihood: float
    bic: dict[int, float]
    mean: FloatArray
    scale: FloatArray
    floors: dict[str, float]
    features: FloatArray


def select_model(
    matrices: Mapping[str, tuple[FeatureMatrix, dict[str, float]]],
    *,
    counts: Sequence[int],
    seed: int,
    n_restarts: int,
    covariance_type: str,
    n_iter: int,
    tol: float,
) -> tuple[ModelChoice | None, list[str]]:
    """Fit every (transform, state count) and keep the lowest BIC, converged fits first.

    BIC is ``-2 log L + p log T`` with ``L`` the likelihood of the RAW features (the
    standardised one plus the Jacobians of the transform and of the scaling), so that fits
    under different transforms compete on the same data.

    Args:
        matrices: Per volatility transform to compare, the training features under it and the
            log floors they used (built once by the caller).
        counts: State counts to compare.
        seed, n_restarts, covariance_type, n_iter, tol: As in :func:`fit_restarts`.

    Returns:
        ``(choice, failures)``: the chosen model, or None when nothing could be fitted, and a
        message per failed restart or skipped state count.
    """
    failures: list[str] = []
    best: ModelChoice | None = None
    for transform, (matrix, floors) in matrices.items():
        features = matrix.names
        mean, scale = matrix.values.mean(axis=0), matrix.values.std(axis=0)
        scale = np.where(scale > DEGENERATE_STD, scale, 1.0)
        z = (matrix.values - mean) / scale
        key = _init_key(z, features)
        n_obs = z.shape[0]
        offset = float(matrix.log_jacobian.sum()) - n_obs * float(np.log(scale).sum())
        table: dict[int, float] = {}
        choices: list[ModelChoice] = []
        for k in counts:
            p = n_parameters(k, z.shape[1], covariance_type)
            if n_obs < 2 * p:
                failures.append(f"{k} states need at least {2 * p} bars, got {n_obs}")
                continue
            fit, errors = fit_restarts(
                z, key, k, seed=seed, n_restarts=n_restarts, covariance_type=covariance_type, n_iter=n_iter, tol=tol
            )
            failures.extend(errors)
            if fit is None:
                continue
            log_lik = fit.log_likelihood + offset
            table[k] = -2.0 * log_lik + p * float(np.log(n_obs))
            choices.append(ModelChoice(fit, transform, log_lik, table, mean, scale, floors, z))
        if choices:
            winner = min(choices, key=_rank)
            if best is None or _rank(winner) < _rank(best):
                best = winner
    return best, failures


def n_parameters(n_states: int, n_features: int, covariance_type: str = "full") -> int:
    """Free parameters of a Gaussian HMM, for BIC.

    ``K - 1`` start probabilities, ``K (K - 1)`` transitions, ``K d`` means, and per state
    ``d (d + 1) / 2`` covariance entries (``"full"``) or ``d`` variances (``"diag"``).
    """
    per_state_cov = {"full": n_features * (n_features + 1) // 2, "diag": n_features, "spherical": 1}
    if covariance_type not in per_state_cov:
        raise ValueError(f"unknown covariance_type {covariance_type!r}; valid: {sorted(per_state_cov)}")
    k = n_states
    return (k - 1) + k * (k - 1) + k * n_features + k * per_state_cov[covariance_type]


def _rank(choice: ModelChoice) -> tuple[bool, float]:
    return (not choice.fit.converged, choice.bic[choice.fit.n_states])


def _init_key(z: FloatArray, features: tuple[str, ...]) -> FloatArray:
    """The column whose order seeds the initial split: the best volatility measure available."""
    for name in ("range", "realized_vol"):
        if name in features:
            return np.asarray(z[:, features.index(name)])
    return np.abs(z[:, 0])  # log_return alone: its size


def is_usable(model: GaussianHMM) -> bool:
    """Whether every fitted parameter is finite and every covariance positive definite."""
    try:
        arrays = (model.startprob_, model.transmat_, model.means_, model.covars_)
        if not all(np.all(np.isfinite(a)) for a in arrays):
            return False
        np.linalg.cholesky(model.covars_)
    except (AttributeError, ValueError, np.linalg.LinAlgError):  # unfitted or broken parameters
        return False
    return True


def fit_restarts(
    z: FloatArray,
    key: FloatArray,
    n_states: int,
    *,
    seed: int,
    n_restarts: int,
    covariance_type: str,
    n_iter: int,
    tol: float,
) -> tuple[HMMFit | None, list[str]]:
    """Fit ``n_restarts`` HMMs and keep the best.

    Args:
        z: Standardised features, shape ``(T, d)``.
        key: One value per row used to order the initial split (a volatility feature).
        n_states: Number of hidden states.
        seed: Seed of restart 0; restart ``j`` uses ``seed + j``.
        n_restarts: Number of restarts.
        covariance_type: hmmlearn covariance type.
        n_iter: EM iteration cap.
        tol: Convergence threshold on the log-likelihood gain of one EM step.

    Returns:
        ``(best, failures)``: the converged restart with the highest finite log-likelihood (a
        non-converged one only when none converged), or None when every restart failed; and
        one message per failed restart.
    """
    fits: list[HMMFit] = []
    failures: list[str] = []
    for j in range(n_restarts):
        restart_seed = seed + j
        try:
            groups = _initial_groups(key, n_states, j, np.random.default_rng(restart_seed), z.shape[1])
        except ValueError as exc:
            failures.append(f"{n_states} states, seed {restart_seed}: {exc}")
            continue
        fit, error = _fit_one(z, groups, n_states, restart_seed, covariance_type, n_iter, tol)
        if fit is None:
            failures.append(f"{n_states} states, seed {restart_seed}: {error}")
        else:
            fits.append(fit)
    if not fits:
        return None, failures
    converged = [f for f in fits if f.converged]
    pool = converged or fits
    return max(pool, key=lambda f: f.log_likelihood), failures


def _fit_one(
    z: FloatArray,
    groups: npt.NDArray[np.int64],
    k: int,
    seed: int,
    covariance_type: str,
    n_iter: int,
    tol: float,
) -> tuple[HMMFit | None, str]:
    error = ""
    for min_covar, covars_prior in ((_MIN_COVAR, 1e-2), (_RETRY_MIN_COVAR, _RETRY_COVARS_PRIOR)):
        try:
            # a group's covariance can be unusable (not positive-definite) on extreme bars: a failed restart
            model = _initial_model(z, groups, k, seed, covariance_type, n_iter, tol, min_covar, covars_prior)
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                model.fit(z)
                log_lik = float(model.score(z))
        except _FIT_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"
            continue
        if not (np.isfinite(log_lik) and is_usable(model)):
            error = "fit produced non-finite parameters or log-likelihood"
            continue
        history = list(model.monitor_.history)
        converged = len(history) >= 2 and history[-1] - history[-2] < tol
        return HMMFit(model, k, log_lik, bool(converged), seed), ""
    return None, error


def _initial_groups(
    key: FloatArray, k: int, restart: int, rng: np.random.Generator, n_features: int
) -> npt.NDArray[np.int64]:
    """Assign each row to one of ``k`` groups: 1-D k-means of the time-smoothed key.

    Smoothing over ``_SMOOTH`` bars (centred: this only seeds EM, it labels nothing) turns a
    noisy daily volatility proxy into the slow level that regimes are made of. Restart 0
    starts k-means from equal quantiles; restart ``j`` from random quantiles.
    """
    n = key.shape[0]
    if n < k * max(n_features + 2, 2):
        raise ValueError(f"{n} rows are too few for {k} states")
    width = min(_SMOOTH, n)
    padded = np.pad(key, (width // 2, width - 1 - width // 2), mode="edge")
    smooth = np.convolve(padded, np.ones(width) / width, "valid")
    shares = np.arange(1, k + 1) / (k + 1) if restart == 0 else np.sort(rng.uniform(0.02, 0.98, k))
    centres = np.quantile(smooth, shares)
    groups = np.zeros(n, dtype=np.int64)
    for _ in range(50):
        groups = np.abs(smooth[:, None] - centres[None, :]).argmin(axis=1)
        updated = np.array([smooth[groups == g].mean() if np.any(groups == g) else centres[g] for g in range(k)])
        if np.allclose(updated, centres):
            break
        centres = updated
    return groups


def _initial_model(
    z: FloatArray,
    groups: npt.NDArray[np.int64],
    k: int,
    seed: int,
    covariance_type: str,
    n_iter: int,
    tol: float,
    min_covar: float,
    covars_prior: float,
) -> GaussianHMM:
    d = z.shape[1]
    model = GaussianHMM(
        n_components=k,
        covariance_type=covariance_type,
        min_covar=min_covar,
        covars_prior=covars_prior,
        n_iter=n_iter,
        tol=tol,
        random_state=seed,
        init_params="",
        implementation="scaling",
    )
    means = np.empty((k, d))
    covars = np.empty((k, d, d))
    overall = np.atleast_2d(np.cov(z.T)) + min_covar * np.eye(d)
    for g in range(k):
        rows = z[groups == g]
        means[g] = rows.mean(axis=0) if rows.shape[0] else z.mean(axis=0)
        cov = np.atleast_2d(np.cov(rows.T)) if rows.shape[0] > d else overall
        covars[g] = cov + min_covar * np.eye(d)
    model.startprob_ = np.full(k, 1.0 / k)
    transmat = np.full((k, k), (1.0 - _STICKY) / (k - 1))
    np.fill_diagonal(transmat, _STICKY)
    model.transmat_ = transmat
    model.means_ = means
    model.covars_ = _to_type(covars, covariance_type)
    return model


def _to_type(full: FloatArray, covariance_type: str) -> FloatArray:
    if covariance_type == "full":
        return full
    if covariance_type == "diag":
        return np.array([np.diag(c) for c in full])
    if covariance_type == "spherical":
        return np.array([np.mean(np.diag(c)) for c in full])
    raise ValueError(f"unknown covariance_type {covariance_type!r}")
