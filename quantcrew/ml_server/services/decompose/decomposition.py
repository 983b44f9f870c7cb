"""One fitted decomposition (PCA, FastICA or NMF) with signs, order and shares normalised.

See :mod:`quantcrew.ml_server.services.decompose.service` for the conventions (reconstruction basis,
signs and order, explained variance, cumulative shares, reconstruction error).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.decomposition import NMF, PCA, FastICA
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from quantcrew.ml_server.schemas.decompose import DecomposeMethod

__all__ = ["DecompositionFit", "fit_decomposition"]

FloatArray = npt.NDArray[np.float64]

_MAX_ITER = 1000  # iteration cap of FastICA and NMF


@dataclass(frozen=True)
class DecompositionFit:
    """One fitted decomposition, its reporting quantities and the pipeline that reproduces it.

    Attributes:
        pipeline: ``Pipeline(scale, model)``, signs and order already normalised.
        components: Reconstruction basis, (k, assets), in the units of the data the model saw.
        scores: Training scores, (rows, k).
        explained_variance, explained_variance_ratio, cumulative_ratio: See the module docstring.
        reconstruction_error: Relative Frobenius error with all components.
        warnings: Fit notes (iteration cap reached).
    """

    pipeline: Pipeline
    components: FloatArray
    scores: FloatArray
    explained_variance: FloatArray
    explained_variance_ratio: FloatArray
    cumulative_ratio: FloatArray
    reconstruction_error: float
    warnings: tuple[str, ...]


def _estimator(method: DecomposeMethod, k: int, seed: int) -> Any:
    if method == "pca":
        return PCA(n_components=k, svd_solver="full")
    if method == "ica":
        return FastICA(n_components=k, whiten="unit-variance", max_iter=_MAX_ITER, random_state=seed)
    return NMF(n_components=k, init="nndsvda", max_iter=_MAX_ITER, random_state=seed)


def fit_decomposition(x: FloatArray, method: DecomposeMethod, k: int, *, standardize: bool,
                      seed: int) -> DecompositionFit:
    """Fit one decomposition of ``x`` (already shifted for NMF) and normalise signs and order.

    Raises:
        ValueError: the fit failed or gave non-finite numbers (callers turn it into a 422 or a note).
    """
    scaler: Any = StandardScaler(with_mean=method != "nmf") if standardize else "passthrough"
    pipe = Pipeline([("scale", scaler), ("model", _estimator(method, k, seed))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # read from n_iter_ below, not spammed to the log
        try:
            scores = np.asarray(pipe.fit_transform(x), dtype=np.float64)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError) as exc:
            raise ValueError(f"{method} fit failed: {exc}") from exc
    est = pipe.named_steps["model"]
    seen = np.asarray(pipe.named_steps["scale"].transform(x), dtype=np.float64) if standardize else x
    basis = np.asarray(est.mixing_.T if method == "ica" else est.components_, dtype=np.float64)
    if not (np.isfinite(scores).all() and np.isfinite(basis).all()):
        raise ValueError(f"{method} fit gave non-finite numbers (is the data rank-deficient?)")
    n = x.shape[0]
    ev = scores.var(axis=0, ddof=1) * (basis**2).sum(axis=1)
    order = np.arange(k) if method == "pca" else np.argsort(-ev, kind="stable")
    signs = np.ones(k) if method == "nmf" else _largest_positive_signs(basis[order])
    scores, basis, ev = scores[:, order] * signs, basis[order] * signs[:, None], ev[order]
    _normalise_estimator(est, method, order, signs)

    total = float(seen.var(axis=0, ddof=1).sum())
    offset = np.zeros(seen.shape[1]) if method == "nmf" else np.asarray(est.mean_, dtype=np.float64)
    if total <= 0.0:
        ratio, cumulative, error = np.zeros(k), np.zeros(k), 0.0
    else:
        ratio = ev / total
        cumulative = np.cumsum(ratio) if method == "pca" else _span_shares(seen, scores, total)
        resid = seen - offset - scores @ basis
        error = float(np.linalg.norm(resid) / np.linalg.norm(seen - seen.mean(axis=0)))
    if standardize:
        ev = ev * (n - 1) / n
    notes: tuple[str, ...] = ()
    if method != "pca" and int(est.n_iter_) >= _MAX_ITER:
        notes = (f"{'FastICA' if method == 'ica' else 'NMF'} did not converge within {_MAX_ITER} iterations; "
                 "the result is the last iterate",)
    return DecompositionFit(pipe, basis, scores, ev, ratio, cumulative, error, notes)


def _span_shares(seen: FloatArray, scores: FloatArray, total: float) -> FloatArray:
    """Share of the total variance in the span of scores 1..j, for each j (least-squares R^2, nested)."""
    centred = scores - scores.mean(axis=0)
    q, r = np.linalg.qr(centred)
    diag = np.abs(np.diag(r))
    live = diag > 1e-10 * max(float(diag.max()), 1e-300)  # a score column already in the span adds nothing
    xc = seen - seen.mean(axis=0)
    gains = ((q.T @ xc) ** 2).sum(axis=1) / (seen.shape[0] - 1) * live
    return np.minimum(np.cumsum(gains) / total, 1.0)


def _largest_positive_signs(basis: FloatArray) -> FloatArray:
    """+1 or -1 per row so that each row's largest-|value| entry (first on ties) is positive."""
    idx = np.argmax(np.abs(basis), axis=1)
    signs = np.sign(basis[np.arange(basis.shape[0]), idx])
    return np.where(signs == 0.0, 1.0, signs)


def _normalise_estimator(est: Any, method: str, order: npt.NDArray[np.intp], signs: FloatArray) -> None:
    """Apply the reply's order and signs to the fitted estimator, so ``transform`` agrees with it."""
    if method == "ica":
        est.components_ = est.components_[order] * signs[:, None]
        est.mixing_ = est.mixing_[:, order] * signs[None, :]
    elif method == "nmf":
        est.components_ = est.components_[order]
    else:
        est.components_ = est.components_ * signs[:, None]
