"""Wire contract of the cluster family: KMeans, DBSCAN and Gaussian mixtures.

Two modes:

* ``observations``: each ROW is a point (e.g. market states from feature rows); columns are
  z-scored first when ``standardize`` (the fitted scaler is part of a stored model).
* ``assets``: each COLUMN is a point, at correlation distance ``sqrt(0.5 * (1 - rho))``.
  DBSCAN uses that distance matrix as is (``metric="precomputed"``); KMeans and the Gaussian
  mixture cluster the assets' classical-MDS coordinates, an exact Euclidean embedding of it.

Labels run ``0..n_clusters-1``; ``-1`` is DBSCAN noise. Silhouettes are measured in the space
that was clustered (z-scored rows, or the correlation distance), without the noise points.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from quantcrew.ml_server.schemas.common import ModelInfo, Provenance, TriggerField, WireModel
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.schemas.serving import ServedReply, ServedRequest

__all__ = [
    "ClusterCovariance",
    "ClusterFitRequest",
    "ClusterFitResponse",
    "ClusterMethod",
    "ClusterMode",
    "ClusterPredictRequest",
    "ClusterPredictResponse",
    "ClusterRequest",
    "ClusterResponse",
]

ClusterMethod = Literal["kmeans", "dbscan", "gmm"]
ClusterMode = Literal["observations", "assets"]
ClusterCovariance = Literal["full", "diag", "tied", "spherical"]


class ClusterRequest(WireModel):
    """Cluster rows (market states) or columns (assets); nothing is kept."""

    data: MatrixPayload = Field(description="The table: rows of observations (oldest first) of named columns.")
    method: ClusterMethod = Field(
        default="kmeans", description="'kmeans', 'dbscan' (density; finds noise) or 'gmm' (Gaussian mixture).")
    mode: ClusterMode = Field(
        default="observations",
        description="'observations': each row is a point; 'assets': each column is a point, by correlation "
                    "distance sqrt(0.5 * (1 - rho)).",
    )
    n_clusters: int | None = Field(
        default=None, ge=1,
        description="KMeans / GMM cluster count; null chooses it over min_clusters..max_clusters (KMeans: highest "
                    "silhouette; GMM: lowest BIC). Must be below the number of points. Ignored by DBSCAN.",
    )
    min_clusters: int = Field(default=2, ge=1, le=64, description="Smallest count tried when n_clusters is null.")
    max_clusters: int = Field(default=8, ge=1, le=64, description="Largest count tried when n_clusters is null.")
    eps: float | None = Field(
        default=None, gt=0.0,
        description="DBSCAN neighbourhood radius, in the clustered space (z-scores, or correlation distance). "
                    "Null: the knee of the sorted k-distance curve (the point furthest below its chord).",
    )
    min_samples: int | None = Field(
        default=None, ge=1,
        description="DBSCAN: points (itself included) within eps that make a core point. Null: 5 in observations "
                    "mode, max(2, min(5, assets // 2)) in assets mode.",
    )
    standardize: bool = Field(
        default=True,
        description="Observations mode: z-score each column first (ignored in assets mode: correlation is "
                    "scale-free).",
    )
    covariance_type: ClusterCovariance = Field(default="full", description="GMM covariance structure.")
    seed: int = Field(default=0, ge=0, description="Random state of KMeans and the GMM (DBSCAN uses none).")

    @model_validator(mode="after")
    def _cluster_range(self) -> ClusterRequest:
        if self.min_clusters > self.max_clusters:
            raise ValueError(
                f"max_clusters ({self.max_clusters}) must not be below min_clusters ({self.min_clusters})")
        return self


class ClusterResponse(Provenance):
    """Cluster labels, sizes, centres and how the cluster count was chosen."""

    mode: ClusterMode
    method: ClusterMethod
    n_clusters: int = Field(
        description="KMeans / GMM: the model's cluster count (a cluster may be empty on duplicate points; see "
                    "warnings). DBSCAN: clusters found, noise not counted; 0 when it found only noise.",
    )
    names: list[str] = Field(
        description="What was clustered: asset names (assets mode), or ISO row times / row indices (observations).")
    labels: list[int] = Field(description="Cluster of each point, in the order of names; -1 = DBSCAN noise.")
    sizes: dict[int, int] = Field(description="Points per cluster (noise not included).")
    centers: list[list[float]] | None = Field(
        description="Observations mode: one centre per cluster, in the input's original units (DBSCAN: the mean "
                    "of its members); null in assets mode.",
    )
    silhouette: float | None = Field(
        description="Mean silhouette of the clustering (noise excluded); null when fewer than 2 clusters.")
    selection: dict[int, float] = Field(
        description="The criterion per cluster count tried (silhouette for KMeans, BIC for GMM); empty for DBSCAN.")
    selection_metric: str | None = Field(description="'silhouette', 'bic', or null for DBSCAN.")
    members: dict[str, list[str]] | None = Field(
        description="Assets mode: cluster label -> asset names ('-1' holds DBSCAN noise); null in observations mode.")
    noise_count: int = Field(description="Points labelled -1 (DBSCAN noise; 0 for other methods).")
    current_label: int | None = Field(description="Observations mode: the label of the last row; null in assets mode.")
    current_probabilities: list[float] | None = Field(
        default=None, description="GMM, observations mode: the last row's probability of each cluster.")
    eps_used: float | None = Field(default=None, description="DBSCAN: the radius used (given or chosen).")
    min_samples_used: int | None = Field(default=None, description="DBSCAN: the min_samples used.")
    warnings: list[str] = Field(
        default_factory=list, description="Notes: counts skipped, iteration caps hit, only noise found.")


class ClusterFitRequest(ClusterRequest):
    """Cluster observations and keep the model (scaler included) under ``name``; assets mode cannot be stored."""

    name: str = Field(
        default="cluster", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
        description="Registry name; each fit adds a version.",
    )
    trigger: TriggerField = "manual"


class ClusterFitResponse(ClusterResponse):
    """A stored fit: the same answer as an analyze call plus the registry entry."""

    model: ModelInfo


class ClusterPredictRequest(ServedRequest):
    """Assign new rows to a stored model's clusters (no refit): a pinned `model_id` (from /v1/cluster/fit) or the
    deployed version of `name`."""

    data: MatrixPayload = Field(
        description="Rows to assign; its columns must be the fitted ones, by name and in the same order.")


class ClusterPredictResponse(Provenance, ServedReply):
    """The cluster of each new row."""

    names: list[str] = Field(description="ISO time of each row, or its index when undated.")
    labels: list[int] = Field(
        description="Cluster of each row. DBSCAN: the cluster of the nearest core sample when it lies within eps, "
                    "else -1 (noise).",
    )
    probabilities: list[list[float]] | None = Field(
        default=None, description="GMM: each row's probability of each cluster; null for other methods.")
