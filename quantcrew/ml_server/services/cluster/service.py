"""Cluster family: market states (rows) or assets (columns) by KMeans, DBSCAN or a Gaussian mixture.

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

The model is :class:`~quantcrew.ml_server.services.cluster.model.ClusterModel`; this module holds the
family's verbs: :func:`analyze` (stateless), :func:`fit` (stored, observations mode only) and
:func:`predict` (a stored model on new rows).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.cluster import (
    ClusterFitRequest,
    ClusterFitResponse,
    ClusterPredictRequest,
    ClusterPredictResponse,
    ClusterRequest,
    ClusterResponse,
)
from quantcrew.ml_server.services import serving
from quantcrew.ml_server.services.adapter import rebuild, store_fit
from quantcrew.ml_server.services.cluster.model import ClusterModel
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.matrix import Matrix, finite_list, finite_rows, matrix_from_payload
from quantcrew.ml_server.services.monitor import capture
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.monitor.reference import save_reference

__all__ = ["analyze", "check_storable", "fit", "predict"]

_MIN_ROWS = 3
_MODEL_PARAMS = frozenset({"method", "mode", "n_clusters", "min_clusters", "max_clusters", "covariance_type", "eps",
                           "min_samples", "standardize", "seed"})
"""The request fields that configure the model."""


def analyze(request: ClusterRequest, *, min_rows: int = _MIN_ROWS) -> ClusterResponse:
    """Cluster the request's rows or assets and describe the clusters (nothing kept).

    Args:
        request: The validated request.
        min_rows: Fewest rows accepted (the server's ``min_rows`` for fits; at least 3 is enforced).

    Raises:
        InvalidInputError: too few rows or assets, constant columns, a cluster count at or above the
            number of points, or no clustering could be fitted.
    """
    model, matrix = _fitted(request, min_rows)
    return _reply(model, matrix)


def check_storable(request: ClusterFitRequest) -> None:
    """Refuse a fit that cannot be stored (assets mode), before any data is read.

    Raises:
        InvalidInputError: ``mode='assets'``.
    """
    if request.mode == "assets":
        message = ("mode='assets' cannot be stored: it clusters these columns by their correlation, and nothing in "
                   "it applies to new rows; call /v1/cluster/analyze instead, or fit mode='observations'")
        raise InvalidInputError(message, details=[{"loc": ["mode"], "msg": message}])


def fit(request: ClusterFitRequest, registry: ModelRegistry, *, min_rows: int) -> ClusterFitResponse:
    """Cluster the rows like :func:`analyze` and store the model (scaler included) as a new version.

    Raises:
        InvalidInputError: assets mode (see :func:`check_storable`), or anything :func:`analyze` refuses.
    """
    check_storable(request)
    model, matrix = _fitted(request, min_rows)
    rows = matrix.row_names()
    stored = store_fit(registry, model, _reply(model, matrix), ClusterFitResponse, name=request.name, metadata={
        "data_hash": matrix.data_hash, "n_rows": matrix.n_rows, "data_start": rows[0], "data_end": rows[-1]},
        trigger=request.trigger)
    # drift compares the rows as sent and each row's cluster index (what the prediction log records)
    save_reference(registry.db_path, stored.model_id, "cluster", model.columns_, matrix.values,
                   np.asarray(model.labels_, dtype=np.float64))
    return stored


def predict(request: ClusterPredictRequest, registry: ModelRegistry, log: PredictionLog | None = None,
            deployments: DeploymentStore | None = None) -> ClusterPredictResponse:
    """Assign new rows to a stored model's clusters (no refit; logged on ``log``).

    The model is the pinned ``model_id``, or the version the deployment stages of ``name`` route the
    request to (its shadows run too: see :mod:`~quantcrew.ml_server.services.serving`).

    Raises:
        ModelNotFoundError: unknown id, or not a cluster model (404).
        NotFoundError: a name with no deployed version (404).
        ArtifactIntegrityError: the stored artifact is refused or does not rebuild (409).
        InvalidInputError: columns differ from the fitted ones (name or order).
    """
    matrix = matrix_from_payload(request.data, min_rows=1)

    def answer(model_id: str, sink: PredictionLog | None) -> ClusterPredictResponse:
        model, info = rebuild(registry, model_id, ClusterModel)
        labels = model.predict(matrix)
        probabilities = model.predict_proba(matrix)
        reply = ClusterPredictResponse(
            model_id=info.model_id, model_version=info.version, method_used=model.method, fallback=False,
            fallback_reason=None, data_hash=matrix.data_hash, seed=info.metadata.get("seed"), as_of=matrix.as_of,
            names=matrix.row_names(), labels=[int(v) for v in labels],
            probabilities=None if probabilities is None else finite_rows(probabilities),
        )
        capture.cluster(sink, request, info, matrix, reply)
        return reply

    return serving.serve(request, deployments, log, answer, lambda reply: {"label": reply.labels[-1]})


def _fitted(request: ClusterRequest, min_rows: int) -> tuple[ClusterModel, Matrix]:
    matrix = matrix_from_payload(request.data, min_rows=max(min_rows, _MIN_ROWS))
    return ClusterModel(**request.model_dump(include=set(_MODEL_PARAMS))).fit(matrix), matrix


def _reply(model: ClusterModel, matrix: Matrix) -> ClusterResponse:
    labels = model.labels_
    assets = model.mode == "assets"
    names = list(matrix.columns) if assets else matrix.row_names()
    members: dict[str, Any] | None = None
    if assets:
        members = {str(c): [names[i] for i in np.flatnonzero(labels == c)] for c in sorted(set(labels.tolist()))}
    centers, current = model.cluster_centers_, model.current_probabilities_
    return ClusterResponse(
        model_id=None, model_version=None, method_used=model.method, fallback=False, fallback_reason=None,
        data_hash=matrix.data_hash, seed=None if model.method == "dbscan" else model.seed, as_of=matrix.as_of,
        mode=model.mode, method=model.method, n_clusters=model.n_clusters_, names=names,
        labels=[int(v) for v in labels], sizes={c: int((labels == c).sum()) for c in range(model.n_clusters_)},
        centers=None if centers is None else finite_rows(centers), silhouette=model.silhouette_,
        selection=model.selection_, selection_metric=model.selection_metric_, members=members,
        noise_count=int((labels < 0).sum()), current_label=None if assets else int(labels[-1]),
        current_probabilities=None if current is None else finite_list(current),
        eps_used=model.eps_, min_samples_used=model.min_samples_, warnings=model.warnings_,
    )
