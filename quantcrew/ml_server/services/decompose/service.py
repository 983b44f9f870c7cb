"""Decompose family: factors of a returns matrix (rows = dates, columns = assets) by PCA, FastICA or NMF.

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

The model is :class:`~quantcrew.ml_server.services.decompose.model.DecompositionModel`; this module
holds the family's verbs: :func:`analyze` (stateless), :func:`fit` (stored) and :func:`transform`
(a stored model on new rows).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.decompose import (
    DecomposeFitRequest,
    DecomposeFitResponse,
    DecomposeRequest,
    DecomposeResponse,
    DecomposeTransformRequest,
    DecomposeTransformResponse,
    RollingDecomposition,
)
from quantcrew.ml_server.services import serving
from quantcrew.ml_server.services.adapter import rebuild, store_fit
from quantcrew.ml_server.services.decompose.decomposition import fit_decomposition
from quantcrew.ml_server.services.decompose.model import DecompositionModel
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.matrix import Matrix, finite_list, finite_rows, matrix_from_payload

__all__ = ["analyze", "fit", "transform"]

FloatArray = npt.NDArray[np.float64]

_MIN_ROWS = 3
_MAX_WINDOWS = 1000
_MODEL_PARAMS = frozenset({"method", "n_components", "variance_target", "standardize", "nmf_shift", "seed"})
"""The request fields that configure the model."""


def analyze(request: DecomposeRequest, *, min_rows: int = _MIN_ROWS) -> DecomposeResponse:
    """Decompose the request's matrix into components, explained variance and exposures (nothing kept).

    Args:
        request: The validated request.
        min_rows: Fewest rows accepted (the server's ``min_rows`` for fits; at least 3 is enforced).

    Raises:
        InvalidInputError: too few rows, constant columns, ``n_components`` over ``min(rows, assets)``,
            negative NMF input without ``nmf_shift``, a rolling window longer than the data, or a fit
            that fails.
    """
    model, matrix = _fitted(request, min_rows)
    return _reply(request, model, matrix)


def fit(request: DecomposeFitRequest, registry: ModelRegistry, *, min_rows: int) -> DecomposeFitResponse:
    """Decompose like :func:`analyze` and store the model (scaling and NMF shift included) as a new version.

    Raises:
        InvalidInputError: anything :func:`analyze` refuses.
    """
    model, matrix = _fitted(request, min_rows)
    rows = matrix.row_names()
    return store_fit(registry, model, _reply(request, model, matrix), DecomposeFitResponse, name=request.name,
                     metadata={"data_hash": matrix.data_hash, "n_rows": matrix.n_rows, "data_start": rows[0],
                               "data_end": rows[-1]}, trigger=request.trigger)


def transform(request: DecomposeTransformRequest, registry: ModelRegistry,
              deployments: DeploymentStore | None = None) -> DecomposeTransformResponse:
    """Project new rows onto a stored model's components (no refit).

    The model is the pinned ``model_id``, or the version the deployment stages of ``name`` route the
    request to (its shadows run too, their last row's scores kept in the deployment store's shadow log:
    see :mod:`~quantcrew.ml_server.services.serving`).

    Raises:
        ModelNotFoundError: unknown id, or not a decompose model (404).
        NotFoundError: a name with no deployed version (404).
        ArtifactIntegrityError: the stored artifact is refused or does not rebuild (409).
        InvalidInputError: columns differ from the fitted ones, or NMF input is still negative after
            the stored shift.
    """
    matrix = matrix_from_payload(request.data, min_rows=1)

    def answer(model_id: str, _log: object) -> DecomposeTransformResponse:
        model, info = rebuild(registry, model_id, DecompositionModel)
        scores = model.transform(matrix)
        return DecomposeTransformResponse(
            model_id=info.model_id, model_version=info.version, method_used=model.method, fallback=False,
            fallback_reason=None, data_hash=matrix.data_hash, seed=info.metadata.get("seed"), as_of=matrix.as_of,
            columns=list(model.component_names_), timestamps=matrix.iso(), scores=finite_rows(scores),
        )

    return serving.serve(request, deployments, None, answer,
                         lambda reply: dict(zip(reply.columns, reply.scores[-1], strict=False)))


def _fitted(request: DecomposeRequest, min_rows: int) -> tuple[DecompositionModel, Matrix]:
    matrix = matrix_from_payload(request.data, min_rows=max(min_rows, _MIN_ROWS))
    return DecompositionModel(**request.model_dump(include=set(_MODEL_PARAMS))).fit(matrix), matrix


def _reply(request: DecomposeRequest, model: DecompositionModel, matrix: Matrix) -> DecomposeResponse:
    fit, k = model.fit_, model.n_components_
    notes = list(fit.warnings)
    rolling = None
    if request.rolling_window is not None:
        rolling = _rolling(matrix, DecompositionModel.shifted(matrix.values, model.shift_), request, k, notes)
    return DecomposeResponse(
        model_id=None, model_version=None, method_used=request.method, fallback=False, fallback_reason=None,
        data_hash=matrix.data_hash, seed=None if request.method == "pca" else request.seed, as_of=matrix.as_of,
        columns=matrix.columns, method=request.method, n_components=k, component_names=model.component_names_,
        components=finite_rows(fit.components), explained_variance=finite_list(fit.explained_variance),
        explained_variance_ratio=finite_list(fit.explained_variance_ratio),
        cumulative_ratio=finite_list(fit.cumulative_ratio),
        exposures={c: finite_list(fit.components[:, i]) for i, c in enumerate(matrix.columns)},
        reconstruction_error=float(np.nan_to_num(fit.reconstruction_error)), shift_applied=model.shift_,
        scores=finite_rows(fit.scores) if request.include_scores else None, rolling=rolling, warnings=notes,
    )


def _bad(field: str, message: str, **extra: object) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": [field], "msg": message, **extra}])


def _rolling(matrix: Matrix, x: FloatArray, req: DecomposeRequest, k: int,
             notes: list[str]) -> list[RollingDecomposition]:
    """The trailing windows asked for, oldest first; a window whose fit fails is left out with a note."""
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
