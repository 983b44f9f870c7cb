"""Factor decomposition of a returns matrix (rows = dates, columns = assets): PCA, FastICA, NMF.

Every fit is a scikit-learn ``Pipeline([("scale", StandardScaler | "passthrough"), ("model", est)])``,
so that a stored model carries its own scaling. ``standardize`` z-scores the assets for PCA and
ICA (PCA of the correlation matrix) and divides NMF input by each asset's standard deviation
without centring (NMF input must stay non-negative). ``X`` below is the data the model saw:
after the NMF shift and the scaling.

* PCA: ``PCA(svd_solver="full")`` (exact, no randomness). With ``n_components=None`` it keeps the
  fewest components whose cumulative explained variance reaches ``variance_target``.
* ICA: ``FastICA(whiten="unit-variance", max_iter=1000, random_state=seed)``; ``n_components``
  defaults to ``min(3, assets)``. Sources have unit variance, so a component's size lives in its
  mixing column.
* NMF: ``NMF(init="nndsvda", max_iter=1000, random_state=seed)``; negative input is refused with
  the count of negative values unless ``nmf_shift``, which adds ``-min(X)`` to every value (the
  shift is reported, stored, and added to new rows before ``transform``).

Reported quantities (see also :mod:`quantcrew.ml_server.schemas.decompose`):

* ``components`` (k x assets) is the reconstruction basis: ``X ~ mean + scores @ components``
  (PCA: the eigenvectors; ICA: the mixing matrix transposed; NMF: ``H``, with no mean).
* Sign: each PCA / ICA component is flipped so that its largest-|loading| entry is positive (the
  first on ties; for PCA this is also scikit-learn's own ``svd_flip`` rule). The stored estimator
  is flipped too, so ``transform`` gives the same scores. Order: PCA by eigenvalue; ICA and NMF
  by ``explained_variance``, largest first (the stored estimator is permuted to match).
* ``explained_variance[j] = var(scores[:, j]) * ||components[j]||^2`` (ddof=1): the variance of
  component ``j``'s own reconstruction, summed over assets; for PCA exactly the eigenvalue. With
  ``standardize`` it is rescaled by ``(n - 1) / n`` to the units of the correlation matrix (the
  scaler divides by the ddof=0 deviation), so PCA reports the correlation matrix's eigenvalues.
* ``explained_variance_ratio[j]``: that over the total variance (sum of the column variances of X).
* ``cumulative_ratio[j]``: the share of the total variance lying in the span of scores ``1..j``
  (the R^2 of a least-squares regression of every asset on them, with an intercept): non-decreasing,
  in [0, 1]. For PCA it is the running sum of the ratios; for ICA and NMF, whose components are not
  orthogonal, it counts what they share once, so it is usually below the running sum.
* ``reconstruction_error = ||X - X_hat||_F / ||X - mean(X)||_F`` with all k components.

Rolling windows (``rolling_window``, ``rolling_step``): trailing windows of ``rolling_window`` rows
whose ends step back from the last row by ``rolling_step`` (so the latest window is always there),
reported oldest first; ``floor((rows - window) / step) + 1`` of them, at most 1,000. Each is fitted
with the same method, component count, scaling, shift and seed as the full sample. Its first
component is signed to agree with the previous window's (positive dot product; the first window
uses the largest-|loading| rule), so its path does not flip sign from noise. A window whose fit
fails is left out and named in the reply's ``warnings``.

Non-convergence (FastICA or NMF at the iteration cap) is reported in ``warnings``; the result is
still the method asked for (``fallback=False``).
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

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.decompose import (
    DecomposeMethod,
    DecomposeRequest,
    DecomposeResponse,
    DecomposeTransformResponse,
    RollingDecomposition,
)
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.services.matrix import Matrix, check_columns, finite_list, finite_rows, matrix_from_payload

__all__ = [
    "COMPONENT_PREFIX", "DecompositionFit", "analyze", "component_names", "fit_decomposition", "fit_metadata",
    "transform",
]

FloatArray = npt.NDArray[np.float64]

COMPONENT_PREFIX: dict[str, str] = {"pca": "pc", "ica": "ic", "nmf": "nmf"}
"""Component names are the prefix and a 1-based index: 'pc1', 'ic2', 'nmf3'."""
_MIN_ROWS = 3
_MAX_ITER = 1000
_MAX_WINDOWS = 1000
_DEFAULT_K = 3
_METADATA_FORMAT = 1


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


def component_names(method: str, k: int) -> list[str]:
    """'pc1'..'pck' for PCA, 'ic1'.. for ICA, 'nmf1'.. for NMF."""
    return [f"{COMPONENT_PREFIX[method]}{j + 1}" for j in range(k)]


# ----------------------------------------------------------------------------- fitting
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


# ----------------------------------------------------------------------------- checks
def _bad(field: str, message: str, **extra: Any) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": ["body", field], "msg": message, **extra}])


def _check_constant(matrix: Matrix) -> None:
    x = matrix.values
    spread = x.max(axis=0) - x.min(axis=0)
    scale = np.maximum(1.0, np.abs(x).max(axis=0))
    const = [c for c, s, m in zip(matrix.columns, spread, scale, strict=True) if s <= 1e-12 * m]
    if const:
        raise InvalidInputError(
            f"data has constant columns {const}: they carry no variance to decompose; drop them",
            details=[{"loc": ["body", "data", "values"], "msg": "constant columns", "columns": const}],
        )


def _n_components(req: DecomposeRequest, n_rows: int, n_assets: int) -> int | None:
    limit = min(n_rows, n_assets)
    if req.n_components is not None and req.n_components > limit:
        raise _bad("n_components", f"n_components={req.n_components} exceeds min(rows, assets) = "
                   f"min({n_rows}, {n_assets}) = {limit}", limit=limit)
    if req.n_components is not None:
        return req.n_components
    return None if req.method == "pca" else min(_DEFAULT_K, limit)


def _nmf_shift(x: FloatArray, method: str, asked: bool) -> float | None:
    if method != "nmf":
        return None
    negatives = int((x < 0.0).sum())
    if negatives == 0:
        return 0.0
    low = float(x.min())
    if not asked:
        raise _bad(
            "nmf_shift",
            f"NMF needs non-negative data but data has {negatives} negative values (min {low:.6g}); send "
            f"nmf_shift=true to shift every value by -min = {-low:.6g} before fitting, or use pca / ica",
            negative_values=negatives, min=low,
        )
    return -low


# ----------------------------------------------------------------------------- public API
def analyze(request: DecomposeRequest, *, min_rows: int = _MIN_ROWS) -> tuple[DecompositionFit, Matrix,
                                                                                 DecomposeResponse]:
    """Fit the requested decomposition on the request's matrix and describe it (the stateless call).

    Args:
        request: The validated request.
        min_rows: Fewest rows accepted (the server's ``min_rows`` for fits; at least 3 is enforced).

    Returns:
        The fit (whose ``pipeline`` a caller may store), the matrix, and the reply.

    Raises:
        InvalidInputError: too few rows, constant columns, ``n_components`` over ``min(rows, assets)``,
            negative NMF input without ``nmf_shift``, a rolling window longer than the data, or a fit
            that fails.
    """
    matrix = matrix_from_payload(request.data, min_rows=max(min_rows, _MIN_ROWS))
    _check_constant(matrix)
    n, p = matrix.values.shape
    k = _n_components(request, n, p)
    shift = _nmf_shift(matrix.values, request.method, request.nmf_shift)
    x = matrix.values + (shift or 0.0)
    if k is None:  # PCA: the fewest components reaching the variance target
        full = _fit(x, request.method, min(n, p), request.standardize, request.seed)
        k = int(np.searchsorted(full.cumulative_ratio, request.variance_target - 1e-12) + 1)
        k = min(k, min(n, p))
    fit = _fit(x, request.method, k, request.standardize, request.seed)
    notes = list(fit.warnings)
    rolling = None
    if request.rolling_window is not None:
        rolling = _rolling(matrix, x, request, k, notes)
    names = component_names(request.method, k)
    reply = DecomposeResponse(
        model_id=None, model_version=None, method_used=request.method, fallback=False, fallback_reason=None,
        data_hash=matrix.data_hash, seed=None if request.method == "pca" else request.seed, as_of=matrix.as_of,
        columns=matrix.columns, method=request.method, n_components=k, component_names=names,
        components=finite_rows(fit.components), explained_variance=finite_list(fit.explained_variance),
        explained_variance_ratio=finite_list(fit.explained_variance_ratio),
        cumulative_ratio=finite_list(fit.cumulative_ratio),
        exposures={c: finite_list(fit.components[:, i]) for i, c in enumerate(matrix.columns)},
        reconstruction_error=float(np.nan_to_num(fit.reconstruction_error)), shift_applied=shift,
        scores=finite_rows(fit.scores) if request.include_scores else None, rolling=rolling, warnings=notes,
    )
    return fit, matrix, reply


def _fit(x: FloatArray, method: DecomposeMethod, k: int, standardize: bool, seed: int) -> DecompositionFit:
    try:
        return fit_decomposition(x, method, k, standardize=standardize, seed=seed)
    except ValueError as exc:
        raise _bad("data", f"{exc}; check the data (collinear or near-constant assets?) or lower n_components") \
            from exc


def _rolling(matrix: Matrix, x: FloatArray, req: DecomposeRequest, k: int,
             notes: list[str]) -> list[RollingDecomposition]:
    n = x.shape[0]
    window = req.rolling_window
    assert window is not None
    if window > n:
        raise _bad("rolling_window", f"rolling_window={window} exceeds the {n} rows of data", rows=n)
    if k > window:
        raise _bad("rolling_window", f"rolling_window={window} is shorter than the {k} components asked for")
    ends = list(range(n - 1, window - 2, -req.rolling_step))[::-1]
    if len(ends) > _MAX_WINDOWS:
        raise _bad("rolling_step", f"{len(ends)} rolling windows requested; the limit is {_MAX_WINDOWS}: raise "
                   f"rolling_step to at least {-(-(n - window + 1) // _MAX_WINDOWS)}", windows=len(ends))
    names = matrix.row_names()
    out: list[RollingDecomposition] = []
    previous: FloatArray | None = None
    for end in ends:
        try:
            fit = fit_decomposition(x[end - window + 1: end + 1], req.method, k, standardize=req.standardize,
                                    seed=req.seed)
        except ValueError as exc:
            notes.append(f"rolling window ending {names[end]} left out: {exc}")
            continue
        first = fit.components[0]
        if previous is not None and float(first @ previous) < 0.0:
            first = -first
        previous = first
        out.append(RollingDecomposition(end=names[end],
                                        explained_variance_ratio=finite_list(fit.explained_variance_ratio),
                                        first_component=finite_list(first), warnings=list(fit.warnings)))
    return out


def fit_metadata(request: DecomposeRequest, matrix: Matrix, reply: DecomposeResponse) -> dict[str, Any]:
    """JSON-able facts a stored model needs for ``transform`` (and a person needs to trust it)."""
    rows = matrix.row_names()
    return {
        "format": _METADATA_FORMAT, "columns": list(matrix.columns), "method": request.method,
        "n_components": reply.n_components, "component_names": list(reply.component_names),
        "standardize": request.standardize, "shift": reply.shift_applied, "seed": reply.seed,
        "variance_target": request.variance_target, "explained_variance_ratio": list(reply.explained_variance_ratio),
        "data_hash": matrix.data_hash, "n_rows": matrix.n_rows, "data_start": rows[0], "data_end": rows[-1],
    }


def transform(pipeline: Any, metadata: dict[str, Any], payload: MatrixPayload, *, model_id: str | None = None,
              model_version: int | None = None) -> DecomposeTransformResponse:
    """Project new rows onto a stored decomposition (no refit).

    Args:
        pipeline: The stored ``Pipeline``.
        metadata: Its registry metadata (from :func:`fit_metadata`).
        payload: The new rows; columns must equal the fitted ones, in order.
        model_id, model_version: Provenance of the stored model.

    Raises:
        InvalidInputError: columns differ from the fitted ones, or NMF input is still negative after
            the stored shift.
        ValueError: ``pipeline`` is not a fitted decomposition pipeline.
    """
    if not isinstance(pipeline, Pipeline) or "model" not in pipeline.named_steps:
        raise ValueError("stored object is not a decompose pipeline")
    matrix = matrix_from_payload(payload, min_rows=1)
    check_columns(list(metadata["columns"]), matrix.columns)
    method = str(metadata["method"])
    x = matrix.values + float(metadata.get("shift") or 0.0)
    if method == "nmf" and (x < 0.0).any():
        negatives = int((x < 0.0).sum())
        raise _bad("data", f"data has {negatives} values below the fitted NMF shift (smallest value "
                   f"{float(matrix.values.min()):.6g} < -shift = {-float(metadata.get('shift') or 0.0):.6g}); "
                   "NMF scores need non-negative input", negative_values=negatives)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = np.asarray(pipeline.transform(x), dtype=np.float64)
    return DecomposeTransformResponse(
        model_id=model_id, model_version=model_version, method_used=method, fallback=False, fallback_reason=None,
        data_hash=matrix.data_hash, seed=metadata.get("seed"), as_of=matrix.as_of,
        columns=list(metadata["component_names"]), timestamps=matrix.iso(), scores=finite_rows(scores),
    )


