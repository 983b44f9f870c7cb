"""The cluster model: KMeans, DBSCAN or a Gaussian mixture of rows (market states) or assets.

:class:`ClusterModel` follows scikit-learn's estimator contract and is the cluster family's model
adapter: in observations mode its ``Pipeline(scale, model)`` goes to the registry through skops
and is rebuilt from it (assets mode fits nothing new rows could reuse, so it is never stored).
How points, spaces and cluster counts are chosen is described in
:mod:`quantcrew.ml_server.services.cluster.service`.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, cast

import numpy as np
import numpy.typing as npt
from sklearn.cluster import DBSCAN, KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import pairwise_distances_argmin_min
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.cluster import ClusterCovariance, ClusterMethod, ClusterMode
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.services.adapter import Artifact, NotFittedError
from quantcrew.ml_server.services.cluster.geometry import (
    assets_embedding,
    correlation_distance,
    k_distances,
    knee_eps,
    silhouette,
)
from quantcrew.ml_server.services.matrix import Matrix, check_columns

__all__ = ["ClusterModel"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_MIN_ASSETS = 3
_KMEANS_INIT = 4
_GMM_INIT = 2
_GMM_ITER = 500
_METADATA_FORMAT = 1
_ESTIMATORS: dict[str, type[Any]] = {"kmeans": KMeans, "dbscan": DBSCAN, "gmm": GaussianMixture}


class ClusterModel:
    """A clustering following scikit-learn's estimator contract; the cluster model adapter.

    Args:
        method: ``"kmeans"``, ``"dbscan"`` or ``"gmm"``.
        mode: ``"observations"`` (rows are points) or ``"assets"`` (columns are points).
        n_clusters: KMeans / GMM cluster count; None chooses it over ``min_clusters..max_clusters``.
        min_clusters: Smallest count tried.
        max_clusters: Largest count tried.
        covariance_type: GMM covariance structure.
        eps: DBSCAN radius; None takes the knee of the k-distance curve.
        min_samples: DBSCAN core-point count; None: 5 (observations) or ``max(2, min(5, assets // 2))``.
        standardize: Observations mode: z-score each column first.
        seed: Random state of KMeans and the GMM.

    Attributes (learned by :meth:`fit`; only ``pipeline_``, ``estimator_``, ``columns_``,
    ``n_clusters_``, ``eps_`` and ``min_samples_`` come back from the registry):
        pipeline_: ``Pipeline(scale, model)`` in observations mode; None in assets mode.
        estimator_: The fitted clustering estimator.
        columns_: The columns it was fitted on.
        labels_: Cluster of each training point (-1 = noise).
        n_clusters_: Number of clusters (the model's count for KMeans / GMM, found ones for DBSCAN).
        selection_, selection_metric_: Criterion per count tried, and its name (None for DBSCAN).
        silhouette_: Silhouette in the clustered space, noise excluded (None under 2 clusters).
        cluster_centers_: Centres in the input's units (observations mode), else None.
        current_probabilities_: GMM membership of the last row (observations mode), else None.
        eps_, min_samples_: DBSCAN's settings as used, else None.
        warnings_: Fit notes.
    """

    family: ClassVar[str] = "cluster"

    def __init__(
        self,
        *,
        method: ClusterMethod = "kmeans",
        mode: ClusterMode = "observations",
        n_clusters: int | None = None,
        min_clusters: int = 2,
        max_clusters: int = 8,
        covariance_type: ClusterCovariance = "full",
        eps: float | None = None,
        min_samples: int | None = None,
        standardize: bool = True,
        seed: int = 0,
    ) -> None:
        self.method = method
        self.mode = mode
        self.n_clusters = n_clusters
        self.min_clusters = min_clusters
        self.max_clusters = max_clusters
        self.covariance_type = covariance_type
        self.eps = eps
        self.min_samples = min_samples
        self.standardize = standardize
        self.seed = seed

    # ------------------------------------------------------------------ fit
    def fit(self, matrix: Matrix) -> ClusterModel:
        """Cluster the rows (observations mode) or the columns (assets mode) of ``matrix``.

        Raises:
            InvalidInputError: too few assets, constant columns, a cluster count at or above the
                number of points, or no clustering could be fitted.
        """
        notes: list[str] = []
        x = matrix.values
        if self.mode == "assets":
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
            scaler = StandardScaler().fit(x) if self.standardize else "passthrough"
            points = np.asarray(scaler.transform(x), dtype=np.float64) if self.standardize else x
        est, labels, selection, metric = self._fit_points(points, distance, notes)
        if self.method == "dbscan":
            n_clusters = int(labels.max()) + 1 if (labels >= 0).any() else 0
        else:  # the model's count, so that centres and sizes line up with it even when a cluster is empty
            n_clusters = int(est.n_clusters if self.method == "kmeans" else est.n_components)
        self.estimator_ = est
        self.pipeline_ = None if self.mode == "assets" else Pipeline([("scale", scaler), ("model", est)])
        self.columns_ = list(matrix.columns)
        self.labels_ = labels
        self.n_clusters_ = n_clusters
        self.selection_ = {k: float(v) for k, v in selection.items()}
        self.selection_metric_ = metric
        self.silhouette_ = silhouette(labels, points, distance, self.seed)
        self.cluster_centers_: FloatArray | None = None
        self.current_probabilities_: FloatArray | None = None
        if self.mode == "observations":
            if self.method == "dbscan":
                self.cluster_centers_ = np.array([x[labels == c].mean(axis=0) for c in range(n_clusters)]).reshape(
                    n_clusters, matrix.n_columns)
            else:
                inside = np.asarray(est.cluster_centers_ if self.method == "kmeans" else est.means_, dtype=np.float64)
                self.cluster_centers_ = inside if isinstance(scaler, str) else scaler.inverse_transform(inside)
            if self.method == "gmm":
                self.current_probabilities_ = np.asarray(est.predict_proba(points[-1:])[0], dtype=np.float64)
        self.eps_ = float(est.eps) if self.method == "dbscan" else None
        self.min_samples_ = int(est.min_samples) if self.method == "dbscan" else None
        self.warnings_ = notes
        return self

    def _counts(self, n_points: int, notes: list[str]) -> list[int]:
        what = "assets" if self.mode == "assets" else "rows"
        if self.n_clusters is not None:
            if self.n_clusters >= n_points:
                raise _bad("n_clusters", f"n_clusters={self.n_clusters} must be below the number of points "
                           f"({n_points} {what})", points=n_points)
            return [self.n_clusters]
        low = max(2, self.min_clusters) if self.method == "kmeans" else self.min_clusters
        if low >= n_points:
            raise _bad("min_clusters", f"there are fewer {what} ({n_points}) than clusters to try "
                       f"(min_clusters={low}); need more {what} than clusters", points=n_points)
        high = min(self.max_clusters, n_points - 1)
        if high < self.max_clusters:
            notes.append(f"cluster counts above {high} not tried: only {n_points} {what}")
        if self.method == "kmeans" and self.min_clusters < 2:
            notes.append("kmeans starts at 2 clusters: the silhouette is undefined for 1")
        return list(range(low, max(high, low) + 1))

    def _select(self, points: FloatArray, distance: FloatArray | None, counts: list[int],
                notes: list[str]) -> tuple[Any, dict[int, float], str]:
        """Fit KMeans or the GMM for each count; keep the best by silhouette (KMeans) or BIC (GMM)."""
        best: Any = None
        best_score = np.inf
        selection: dict[int, float] = {}
        metric = "silhouette" if self.method == "kmeans" else "bic"
        for k in counts:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    if self.method == "kmeans":
                        est: Any = KMeans(n_clusters=k, n_init=_KMEANS_INIT, random_state=self.seed).fit(points)
                    else:
                        est = GaussianMixture(n_components=k, covariance_type=self.covariance_type, n_init=_GMM_INIT,
                                              max_iter=_GMM_ITER, random_state=self.seed).fit(points)
            except (ValueError, np.linalg.LinAlgError) as exc:
                notes.append(f"{self.method} with {k} clusters failed: {exc}")
                continue
            if self.method == "kmeans":
                value = silhouette(np.asarray(est.labels_, dtype=np.int64), points, distance, self.seed)
            else:
                bic = float(est.bic(points))
                value = bic if np.isfinite(bic) else None
            if len(counts) == 1:  # nothing to choose: keep the fit, report the criterion when it exists
                best = est
                if value is not None:
                    selection[k] = value
                continue
            if value is None:
                notes.append(f"{self.method} with {k} clusters has no usable {metric}; skipped")
                continue
            selection[k] = value
            score = -value if self.method == "kmeans" else value
            if score < best_score:  # strict: ties keep the smaller count
                best, best_score = est, score
        if best is None:
            raise _bad("data", f"no {self.method} clustering could be fitted for counts {counts}: "
                       + ("; ".join(notes[-3:]) or "check the data"))
        return best, selection, metric

    def _fit_points(self, points: FloatArray, distance: FloatArray | None,
                    notes: list[str]) -> tuple[Any, IntArray, dict[int, float], str | None]:
        n = points.shape[0] if distance is None else distance.shape[0]
        if self.method == "dbscan":
            m = self.min_samples if self.min_samples is not None else (
                max(2, min(5, n // 2)) if self.mode == "assets" else 5)
            eps = self.eps if self.eps is not None else knee_eps(
                k_distances(None if distance is not None else points, distance, m))
            est = DBSCAN(eps=eps, min_samples=m, metric="precomputed" if distance is not None else "euclidean")
            est.fit(distance if distance is not None else points)
            labels = np.asarray(est.labels_, dtype=np.int64)
            if (labels < 0).all():
                notes.append(f"DBSCAN found only noise (eps={eps:.6g}, min_samples={m}): 0 clusters; "
                             "raise eps or lower min_samples")
            return est, labels, {}, None
        est, selection, metric = self._select(points, distance, self._counts(n, notes), notes)
        if self.method == "gmm":
            if not est.converged_:
                notes.append(f"GMM did not converge within {_GMM_ITER} iterations; the result is the last iterate")
            params = _gmm_parameters(int(est.n_components), points.shape[1], self.covariance_type)
            if params >= n:
                notes.append(f"the chosen mixture has {params} free parameters for {n} points: BIC and the fit are "
                             "weakly determined (try covariance_type='diag' or 'spherical', or kmeans)")
        labels = np.asarray(est.labels_ if self.method == "kmeans" else est.predict(points), dtype=np.int64)
        found = np.unique(labels).size
        if found < (est.n_clusters if self.method == "kmeans" else est.n_components):
            notes.append(f"only {found} of the {self.method} clusters hold points (duplicate or too few distinct "
                         "points); empty clusters keep their label and size 0")
        return est, labels, selection, metric

    # ------------------------------------------------------------- predict
    def _check_stored(self) -> Pipeline:
        if getattr(self, "pipeline_", None) is None:
            raise NotFittedError("this ClusterModel has no fitted observations pipeline: call fit(matrix) in "
                                 "observations mode or rebuild a stored one")
        pipeline: Pipeline = self.pipeline_
        return pipeline

    def predict(self, matrix: Matrix) -> IntArray:
        """Cluster of each new row (no refit); DBSCAN: the nearest core sample's within ``eps``, else -1.

        Raises:
            InvalidInputError: columns differ from the fitted ones (name or order).
            NotFittedError: no fitted observations pipeline.
        """
        pipeline = self._check_stored()
        check_columns(self.columns_, matrix.columns)
        if self.method == "dbscan":
            scaler = pipeline.named_steps["scale"]
            z = matrix.values if isinstance(scaler, str) else np.asarray(scaler.transform(matrix.values))
            return _dbscan_assign(pipeline.named_steps["model"], z)
        return np.asarray(pipeline.predict(matrix.values), dtype=np.int64)

    def predict_proba(self, matrix: Matrix) -> FloatArray | None:
        """GMM membership probabilities of each new row; None for KMeans and DBSCAN."""
        pipeline = self._check_stored()
        if self.method != "gmm":
            return None
        return np.asarray(pipeline.predict_proba(matrix.values), dtype=np.float64)

    # ---------------------------------------------------------- persistence
    def to_artifact(self) -> Artifact:
        """The observations pipeline through skops; what ``predict`` needs, and the fit's summary, as metadata.

        Raises:
            NotFittedError: not fitted, or fitted in assets mode (nothing new rows could reuse).
        """
        pipeline = self._check_stored()
        sizes = {str(c): int((self.labels_ == c).sum()) for c in range(self.n_clusters_)}
        metadata = {
            "format": _METADATA_FORMAT, "columns": list(self.columns_), "method": self.method, "mode": self.mode,
            "n_clusters": self.n_clusters_, "standardize": self.standardize, "covariance_type": self.covariance_type,
            "eps": self.eps_, "min_samples": self.min_samples_, "seed": None if self.method == "dbscan" else self.seed,
            "silhouette": self.silhouette_, "sizes": sizes,
        }
        return Artifact(obj=pipeline, fmt="skops", method=self.method, metadata=metadata)

    @classmethod
    def from_artifact(cls, obj: Any, info: ModelInfo, **context: Any) -> ClusterModel:
        """The fitted model again, from its verified pipeline and registry entry.

        Raises:
            ValueError, KeyError, TypeError: the entry does not describe this pipeline (a 409 on rebuild).
        """
        meta = info.metadata
        if meta.get("format") != _METADATA_FORMAT:
            raise ValueError(f"unsupported cluster metadata format {meta.get('format')!r}")
        if not isinstance(obj, Pipeline) or "model" not in obj.named_steps:
            raise ValueError("stored object is not a cluster pipeline")
        method, est = str(meta["method"]), obj.named_steps["model"]
        if method not in _ESTIMATORS or not isinstance(est, _ESTIMATORS[method]):
            raise ValueError(f"the stored estimator is a {type(est).__name__}, not the {method!r} its metadata names")
        columns = [str(c) for c in meta["columns"]]
        if int(est.n_features_in_) != len(columns):
            raise ValueError(f"the stored estimator expects {est.n_features_in_} columns; the metadata names "
                             f"{len(columns)}")
        model = cls(method=cast(ClusterMethod, method), standardize=bool(meta["standardize"]),
                    covariance_type=cast(ClusterCovariance, str(meta["covariance_type"])), seed=int(meta["seed"] or 0))
        model.pipeline_ = obj
        model.estimator_ = est
        model.columns_ = columns
        model.n_clusters_ = int(meta["n_clusters"])
        model.eps_ = None if meta["eps"] is None else float(meta["eps"])
        model.min_samples_ = None if meta["min_samples"] is None else int(meta["min_samples"])
        return model


def _bad(field: str, message: str, **extra: Any) -> InvalidInputError:
    return InvalidInputError(message, details=[{"loc": [field], "msg": message, **extra}])


def _check_constant(matrix: Matrix, what: str) -> None:
    x = matrix.values
    spread = x.max(axis=0) - x.min(axis=0)
    const = [c for c, s, m in zip(matrix.columns, spread, np.maximum(1.0, np.abs(x).max(axis=0)), strict=True)
             if s <= 1e-12 * m]
    if const:
        raise InvalidInputError(
            f"data has constant columns {const}: {what}; drop them",
            details=[{"loc": ["data", "values"], "msg": "constant columns", "columns": const}],
        )


def _gmm_parameters(k: int, d: int, covariance_type: str) -> int:
    cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "tied": d * (d + 1) // 2, "spherical": k}[covariance_type]
    return cov + k * d + k - 1


def _dbscan_assign(est: Any, z: FloatArray) -> IntArray:
    """Cluster of the nearest core sample when within eps, else -1."""
    core = np.asarray(est.components_, dtype=np.float64)
    if core.shape[0] == 0:
        return np.full(z.shape[0], -1, dtype=np.int64)
    core_labels = np.asarray(est.labels_, dtype=np.int64)[np.asarray(est.core_sample_indices_)]
    idx, dist = pairwise_distances_argmin_min(z, core)
    return np.where(dist <= float(est.eps), core_labels[idx], -1).astype(np.int64)
