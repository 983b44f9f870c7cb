"""Clustering of market states (rows) or assets (columns): KMeans, DBSCAN, Gaussian mixture.

Points and the space they are clustered in:

* ``observations`` mode: each row is a point; with ``standardize`` each column is z-scored first
  (``StandardScaler``, kept in the stored ``Pipeline([("scale", ...), ("model", est)])``). Constant
  columns are refused (422 naming them). Centres are reported in the input's original units.
* ``assets`` mode: each column is a point at correlation distance ``d = sqrt(0.5 * (1 - rho))``
  (0 for identical, 1 for opposite series). DBSCAN uses the distance matrix itself
  (``metric="precomputed"``). KMeans and the GMM cluster the assets' classical-MDS coordinates:
  ``B = -0.5 J D^2 J = 0.25 J R J`` is positive semi-definite, so its eigenvectors scaled by
  ``sqrt(eigenvalue)`` (eigenvalues above ``1e-10`` of the largest) embed the assets with Euclidean
  distances equal to ``d`` exactly. Nothing is fitted that new data could reuse, so assets mode
  cannot be stored. ``standardize`` does not apply (correlation is scale-free).

Choosing the number of clusters (``n_clusters=None``): KMeans (``n_init=4``) keeps the count in
``max(2, min_clusters)..max_clusters`` with the highest silhouette; the GMM (``n_init=2``, k-means start) the count
with the lowest BIC over ``min_clusters..max_clusters``; ties go to the smaller count. Counts at or
above the number of points are skipped with a warning. Silhouettes are computed in the clustered
space (z-scores, or the correlation distance), noise excluded, on a seeded sample of 5,000 points
when there are more; ``None`` when fewer than 2 clusters remain.

DBSCAN: ``min_samples`` defaults to 5 (observations) or ``max(2, min(5, assets // 2))`` (assets).
``eps=None`` is chosen from the k-distance curve: each point's distance to its ``min_samples``-th
nearest point (itself included, as DBSCAN counts), sorted; both axes scaled to [0, 1]; ``eps`` is
the distance at the knee, the point furthest below the chord from the first to the last point.
A DBSCAN that finds only noise answers with 0 clusters and a warning. DBSCAN ``predict`` on a
stored model gives each new point the cluster of its nearest core sample when that lies within
``eps``, else -1 (noise): core training points keep their label; a border point within ``eps``
of cores of two clusters may get the other one than DBSCAN gave it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.cluster import DBSCAN, KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import pairwise_distances_argmin_min, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.cluster import ClusterPredictResponse, ClusterRequest, ClusterResponse
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.services.matrix import Matrix, check_columns, finite_list, finite_rows, matrix_from_payload

__all__ = ["ClusterFit", "analyze", "assets_embedding", "correlation_distance", "fit_metadata", "knee_eps",
           "predict"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_MIN_ROWS = 3
_MIN_ASSETS = 3
_SILHOUETTE_SAMPLE = 5_000
_KMEANS_INIT = 4
_GMM_INIT = 2
_GMM_ITER = 500
_METADATA_FORMAT = 1


@dataclass(frozen=True)
class ClusterFit:
    """A clustering and, in observations mode, the pipeline that reproduces it.

    Attributes:
        labels: Cluster of each point (-1 = noise).
        pipeline: ``Pipeline(scale, model)`` for observations mode; None in assets mode.
        estimator: The fitted clustering estimator.
    """

    labels: IntArray
    pipeline: Pipeline | None
    estimator: Any


# ----------------------------------------------------------------------------- geometry
def correlation_distance(x: FloatArray) -> FloatArray:
    """``sqrt(0.5 * (1 - rho))`` between the columns of ``x``, (assets, assets), zero diagonal."""
    rho = np.clip(np.corrcoef(x, rowvar=False), -1.0, 1.0)
    d = np.sqrt(np.clip(0.5 * (1.0 - rho), 0.0, 1.0))
    np.fill_diagonal(d, 0.0)
    return np.asarray(d, dtype=np.float64)


def assets_embedding(distance: FloatArray) -> FloatArray:
    """Classical-MDS coordinates whose Euclidean distances reproduce ``distance`` (a Euclidean one)."""
    p = distance.shape[0]
    j = np.eye(p) - 1.0 / p
    b = -0.5 * j @ (distance**2) @ j
    vals, vecs = np.linalg.eigh((b + b.T) / 2.0)
    keep = vals > 1e-10 * max(float(vals.max()), 1e-300)
    if not keep.any():
        return np.zeros((p, 1))
    out: FloatArray = vecs[:, keep][:, ::-1] * np.sqrt(vals[keep][::-1])
    return out


def knee_eps(kdist: FloatArray) -> float:
    """The k-distance at the knee: sorted, scaled to [0, 1], furthest below the first-to-last chord."""
    d = np.sort(np.asarray(kdist, dtype=np.float64))
    positive = d[d > 0.0]
    floor = float(positive.min()) if positive.size else 1e-12
    if d[-1] <= d[0]:
        return max(float(d[-1]), floor)
    x = np.linspace(0.0, 1.0, d.size)
    y = (d - d[0]) / (d[-1] - d[0])
    return max(float(d[int(np.argmax(x - y))]), floor)


def _kdist(points: FloatArray | None, distance: FloatArray | None, m: int) -> FloatArray:
    if distance is not None:
        n = distance.shape[0]
        return np.asarray(np.sort(distance, axis=1)[:, min(m, n) - 1], dtype=np.float64)
    assert points is not None
    n = points.shape[0]
    dist, _ = NearestNeighbors(n_neighbors=min(m, n)).fit(points).kneighbors(points)
    return np.asarray(dist[:, -1], dtype=np.float64)


# ----------------------------------------------------------------------------- checks
def _bad(field: str, message: str, **extra: Any) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": ["body", field], "msg": message, **extra}])


def _check_constant(matrix: Matrix, what: str) -> None:
    x = matrix.values
    spread = x.max(axis=0) - x.min(axis=0)
    const = [c for c, s, m in zip(matrix.columns, spread, np.maximum(1.0, np.abs(x).max(axis=0)), strict=True)
             if s <= 1e-12 * m]
    if const:
        raise InvalidInputError(
            f"data has constant columns {const}: {what}; drop them",
            details=[{"loc": ["body", "data", "values"], "msg": "constant columns", "columns": const}],
        )


def _counts(req: ClusterRequest, n_points: int, notes: list[str]) -> list[int]:
    what = "assets" if req.mode == "assets" else "rows"
    if req.n_clusters is not None:
        if req.n_clusters >= n_points:
            raise _bad("n_clusters", f"n_clusters={req.n_clusters} must be below the number of points "
                       f"({n_points} {what})", points=n_points)
        return [req.n_clusters]
    low = max(2, req.min_clusters) if req.method == "kmeans" else req.min_clusters
    if low >= n_points:
        raise _bad("min_clusters", f"there are fewer {what} ({n_points}) than clusters to try "
                   f"(min_clusters={low}); need more {what} than clusters", points=n_points)
    high = min(req.max_clusters, n_points - 1)
    if high < req.max_clusters:
        notes.append(f"cluster counts above {high} not tried: only {n_points} {what}")
    if req.method == "kmeans" and req.min_clusters < 2:
        notes.append("kmeans starts at 2 clusters: the silhouette is undefined for 1")
    return list(range(low, max(high, low) + 1))


# ----------------------------------------------------------------------------- fitting
def _silhouette(labels: IntArray, points: FloatArray | None, distance: FloatArray | None,
                seed: int) -> float | None:
    keep = labels >= 0
    kept = labels[keep]
    n_labels = np.unique(kept).size
    if n_labels < 2 or n_labels > kept.size - 1:
        return None
    sample = _SILHOUETTE_SAMPLE if kept.size > _SILHOUETTE_SAMPLE else None
    if distance is not None:
        value = silhouette_score(distance[np.ix_(keep, keep)], kept, metric="precomputed",
                                 sample_size=sample, random_state=seed)
    else:
        assert points is not None
        value = silhouette_score(points[keep], kept, sample_size=sample, random_state=seed)
    return float(value) if np.isfinite(value) else None


def _gmm_parameters(k: int, d: int, covariance_type: str) -> int:
    cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "tied": d * (d + 1) // 2, "spherical": k}[covariance_type]
    return cov + k * d + k - 1


def _select(req: ClusterRequest, points: FloatArray, distance: FloatArray | None, counts: list[int],
            notes: list[str]) -> tuple[Any, dict[int, float], str]:
    """Fit KMeans or the GMM for each count; keep the best by silhouette (KMeans) or BIC (GMM)."""
    best: Any = None
    best_score = np.inf
    selection: dict[int, float] = {}
    metric = "silhouette" if req.method == "kmeans" else "bic"
    for k in counts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                if req.method == "kmeans":
                    est: Any = KMeans(n_clusters=k, n_init=_KMEANS_INIT, random_state=req.seed).fit(points)
                else:
                    est = GaussianMixture(n_components=k, covariance_type=req.covariance_type, n_init=_GMM_INIT,
                                          max_iter=_GMM_ITER, random_state=req.seed).fit(points)
        except (ValueError, np.linalg.LinAlgError) as exc:
            notes.append(f"{req.method} with {k} clusters failed: {exc}")
            continue
        if req.method == "kmeans":
            value = _silhouette(np.asarray(est.labels_, dtype=np.int64), points, distance, req.seed)
        else:
            bic = float(est.bic(points))
            value = bic if np.isfinite(bic) else None
        if len(counts) == 1:  # nothing to choose: keep the fit, report the criterion when it exists
            best = est
            if value is not None:
                selection[k] = value
            continue
        if value is None:
            notes.append(f"{req.method} with {k} clusters has no usable {metric}; skipped")
            continue
        selection[k] = value
        score = -value if req.method == "kmeans" else value
        if score < best_score:  # strict: ties keep the smaller count
            best, best_score = est, score
    if best is None:
        raise _bad("data", f"no {req.method} clustering could be fitted for counts {counts}: "
                   + ("; ".join(notes[-3:]) or "check the data"))
    return best, selection, metric


def _fit_points(req: ClusterRequest, points: FloatArray, distance: FloatArray | None,
                notes: list[str]) -> tuple[Any, IntArray, dict[int, float], str | None]:
    n = points.shape[0] if distance is None else distance.shape[0]
    if req.method == "dbscan":
        m = req.min_samples if req.min_samples is not None else (
            max(2, min(5, n // 2)) if req.mode == "assets" else 5)
        eps = req.eps if req.eps is not None else knee_eps(_kdist(None if distance is not None else points,
                                                                   distance, m))
        est = DBSCAN(eps=eps, min_samples=m, metric="precomputed" if distance is not None else "euclidean")
        est.fit(distance if distance is not None else points)
        labels = np.asarray(est.labels_, dtype=np.int64)
        if (labels < 0).all():
            notes.append(f"DBSCAN found only noise (eps={eps:.6g}, min_samples={m}): 0 clusters; "
                         "raise eps or lower min_samples")
        return est, labels, {}, None
    est, selection, metric = _select(req, points, distance, _counts(req, n, notes), notes)
    if req.method == "gmm":
        if not est.converged_:
            notes.append(f"GMM did not converge within {_GMM_ITER} iterations; the result is the last iterate")
        params = _gmm_parameters(int(est.n_components), points.shape[1], req.covariance_type)
        if params >= n:
            notes.append(f"the chosen mixture has {params} free parameters for {n} points: BIC and the fit are "
                         "weakly determined (try covariance_type='diag' or 'spherical', or kmeans)")
    labels = np.asarray(est.labels_ if req.method == "kmeans" else est.predict(points), dtype=np.int64)
    found = np.unique(labels).size
    if found < (est.n_clusters if req.method == "kmeans" else est.n_components):
        notes.append(f"only {found} of the {req.method} clusters hold points (duplicate or too few distinct points); "
                     "empty clusters keep their label and size 0")
    return est, labels, selection, metric


# ----------------------------------------------------------------------------- public API
def analyze(request: ClusterRequest, *, min_rows: int = _MIN_ROWS) -> tuple[ClusterFit, Matrix, ClusterResponse]:
    """Cluster the request's rows or assets and describe the result (the stateless call).

    Args:
        request: The validated request.
        min_rows: Fewest rows accepted (the server's ``min_rows`` for fits; at least 3 is enforced).

    Returns:
        The fit (whose ``pipeline`` a caller may store, observations mode only), the matrix, and the reply.

    Raises:
        InvalidInputError: too few rows or assets, constant columns, a cluster count at or above the
            number of points, or no clustering could be fitted.
    """
    matrix = matrix_from_payload(request.data, min_rows=max(min_rows, _MIN_ROWS))
    notes: list[str] = []
    x = matrix.values
    if request.mode == "assets":
        if matrix.n_columns < _MIN_ASSETS:
            raise _bad("mode", f"assets mode clusters columns and needs at least {_MIN_ASSETS} assets; data has "
                       f"{matrix.n_columns}", assets=matrix.n_columns)
        _check_constant(matrix, "a constant series has no correlation with anything")
        distance: FloatArray | None = correlation_distance(x)
        assert distance is not None
        points = assets_embedding(distance)
        scaler: Any = "passthrough"
    else:
        _check_constant(matrix, "z-scoring divides by their zero spread and they separate nothing")
        distance = None
        scaler = StandardScaler().fit(x) if request.standardize else "passthrough"
        points = np.asarray(scaler.transform(x), dtype=np.float64) if request.standardize else x
    est, labels, selection, metric = _fit_points(request, points, distance, notes)
    if request.method == "dbscan":
        n_clusters = int(labels.max()) + 1 if (labels >= 0).any() else 0
    else:  # the model's count, so that centres and sizes line up with it even when a cluster is empty
        n_clusters = int(est.n_clusters if request.method == "kmeans" else est.n_components)
    pipeline = None if request.mode == "assets" else Pipeline([("scale", scaler), ("model", est)])
    fit = ClusterFit(labels=labels, pipeline=pipeline, estimator=est)
    return fit, matrix, _response(request, matrix, fit, points, distance, n_clusters, selection, metric, notes)


def _response(req: ClusterRequest, matrix: Matrix, fit: ClusterFit, points: FloatArray,
              distance: FloatArray | None, n_clusters: int, selection: dict[int, float], metric: str | None,
              notes: list[str]) -> ClusterResponse:
    labels, est = fit.labels, fit.estimator
    assets = req.mode == "assets"
    names = list(matrix.columns) if assets else matrix.row_names()
    centers: list[list[float]] | None = None
    probabilities: list[float] | None = None
    if not assets:
        scaler = fit.pipeline.named_steps["scale"] if fit.pipeline is not None else "passthrough"
        if req.method == "dbscan":
            raw = np.array([matrix.values[labels == c].mean(axis=0) for c in range(n_clusters)]).reshape(
                n_clusters, matrix.n_columns)
        else:
            inside = np.asarray(est.cluster_centers_ if req.method == "kmeans" else est.means_, dtype=np.float64)
            raw = inside if isinstance(scaler, str) else scaler.inverse_transform(inside)
        centers = finite_rows(raw)
        if req.method == "gmm":
            probabilities = finite_list(est.predict_proba(points[-1:])[0])
    members = None
    if assets:
        members = {str(c): [names[i] for i in np.flatnonzero(labels == c)] for c in sorted(set(labels.tolist()))}
    return ClusterResponse(
        model_id=None, model_version=None, method_used=req.method, fallback=False, fallback_reason=None,
        data_hash=matrix.data_hash, seed=None if req.method == "dbscan" else req.seed, as_of=matrix.as_of,
        mode=req.mode, method=req.method, n_clusters=n_clusters, names=names, labels=[int(v) for v in labels],
        sizes={c: int((labels == c).sum()) for c in range(n_clusters)}, centers=centers,
        silhouette=_silhouette(labels, points, distance, req.seed),
        selection={k: float(v) for k, v in selection.items()}, selection_metric=metric, members=members,
        noise_count=int((labels < 0).sum()), current_label=None if assets else int(labels[-1]),
        current_probabilities=probabilities,
        eps_used=float(est.eps) if req.method == "dbscan" else None,
        min_samples_used=int(est.min_samples) if req.method == "dbscan" else None,
        warnings=notes,
    )


def fit_metadata(request: ClusterRequest, matrix: Matrix, reply: ClusterResponse) -> dict[str, Any]:
    """JSON-able facts a stored model needs for ``predict`` (and a person needs to trust it)."""
    rows = matrix.row_names()
    return {
        "format": _METADATA_FORMAT, "columns": list(matrix.columns), "method": request.method,
        "mode": request.mode, "n_clusters": reply.n_clusters, "standardize": request.standardize,
        "covariance_type": request.covariance_type, "eps": reply.eps_used, "min_samples": reply.min_samples_used,
        "seed": reply.seed, "silhouette": reply.silhouette, "sizes": {str(k): v for k, v in reply.sizes.items()},
        "data_hash": matrix.data_hash, "n_rows": matrix.n_rows, "data_start": rows[0], "data_end": rows[-1],
    }


def predict(pipeline: Any, metadata: dict[str, Any], payload: MatrixPayload, *, model_id: str | None = None,
            model_version: int | None = None) -> ClusterPredictResponse:
    """Assign new rows to a stored model's clusters (no refit).

    Raises:
        InvalidInputError: columns differ from the fitted ones (name or order).
        ValueError: ``pipeline`` is not a fitted cluster pipeline.
    """
    if not isinstance(pipeline, Pipeline) or "model" not in pipeline.named_steps:
        raise ValueError("stored object is not a cluster pipeline")
    matrix = matrix_from_payload(payload, min_rows=1)
    check_columns(list(metadata["columns"]), matrix.columns)
    method = str(metadata["method"])
    est = pipeline.named_steps["model"]
    probabilities = None
    if method == "dbscan":
        scaler = pipeline.named_steps["scale"]
        z = matrix.values if isinstance(scaler, str) else np.asarray(scaler.transform(matrix.values))
        labels = _dbscan_assign(est, z)
    else:
        labels = np.asarray(pipeline.predict(matrix.values), dtype=np.int64)
        if method == "gmm":
            probabilities = finite_rows(pipeline.predict_proba(matrix.values))
    return ClusterPredictResponse(
        model_id=model_id, model_version=model_version, method_used=method, fallback=False, fallback_reason=None,
        data_hash=matrix.data_hash, seed=metadata.get("seed"), as_of=matrix.as_of, names=matrix.row_names(),
        labels=[int(v) for v in labels], probabilities=probabilities,
    )


def _dbscan_assign(est: Any, z: FloatArray) -> IntArray:
    """Cluster of the nearest core sample when within eps, else -1."""
    core = np.asarray(est.components_, dtype=np.float64)
    if core.shape[0] == 0:
        return np.full(z.shape[0], -1, dtype=np.int64)
    core_labels = np.asarray(est.labels_, dtype=np.int64)[np.asarray(est.core_sample_indices_)]
    idx, dist = pairwise_distances_argmin_min(z, core)
    return np.where(dist <= float(est.eps), core_labels[idx], -1).astype(np.int64)


