"""Cluster geometry: correlation distances, their exact embedding, DBSCAN's k-distance knee, the silhouette."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from sklearn.metrics import silhouette_score
from sklearn.neighbors import NearestNeighbors

__all__ = ["assets_embedding", "correlation_distance", "k_distances", "knee_eps", "silhouette"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_SILHOUETTE_SAMPLE = 5_000


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


def k_distances(points: FloatArray | None, distance: FloatArray | None, m: int) -> FloatArray:
    """Each point's distance to its ``m``-th nearest point, itself included (as DBSCAN counts).

    Args:
        points: Points, (n, d); used when ``distance`` is None.
        distance: Precomputed distances, (n, n).
        m: DBSCAN's ``min_samples``.
    """
    if distance is not None:
        n = distance.shape[0]
        return np.asarray(np.sort(distance, axis=1)[:, min(m, n) - 1], dtype=np.float64)
    assert points is not None
    n = points.shape[0]
    dist, _ = NearestNeighbors(n_neighbors=min(m, n)).fit(points).kneighbors(points)
    return np.asarray(dist[:, -1], dtype=np.float64)


def silhouette(labels: IntArray, points: FloatArray | None, distance: FloatArray | None,
               seed: int) -> float | None:
    """Silhouette of a clustering in the space it was made in, noise excluded (None under 2 clusters).

    Computed on a seeded sample of 5,000 points when there are more.
    """
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
