"""Cluster service: KMeans / GMM / DBSCAN on blobs with known labels, assets mode, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from quantcrew.ml_server.errors import ArtifactIntegrityError, InvalidInputError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.cluster import ClusterFitRequest, ClusterPredictRequest, ClusterRequest
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.services.cluster.service import analyze, check_storable, fit, predict


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny KMeans / GMM fits run 10-20x slower with BLAS and OpenMP threads on a busy machine."""
    with threadpool_limits(limits=1):
        yield


CENTRES = np.array([[0.0, 0.0, 10.0], [8.0, 8.0, 0.0], [0.0, 9.0, 5.0]])


def _request(values: np.ndarray, columns: list[str] | None = None, **kw: Any) -> ClusterRequest:
    cols = columns or [f"f{i}" for i in range(values.shape[1])]
    return ClusterRequest(data=MatrixPayload(columns=cols, values=values.tolist()), **kw)


def _blobs(per: int = 60, spread: float = 0.6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(CENTRES)), per)
    rng.shuffle(truth)
    x = CENTRES[truth] + rng.normal(0, spread, (truth.size, CENTRES.shape[1]))
    return x * np.array([1.0, 100.0, 0.01]), truth  # columns in very different units


def _two_factor_assets(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 0.01, n), rng.normal(0, 0.01, n)
    cols = [a, a, a, b, b, b]
    return np.column_stack([f * rng.uniform(0.8, 1.2) + rng.normal(0, 0.005, n) for f in cols])


def test_kmeans_recovers_blobs_and_silhouette_picks_true_k() -> None:
    x, truth = _blobs()
    reply = analyze(_request(x, method="kmeans"))
    assert reply.n_clusters == 3
    assert adjusted_rand_score(truth, reply.labels) == 1.0
    assert reply.selection_metric == "silhouette"
    assert max(reply.selection, key=lambda k: reply.selection[k]) == 3
    assert set(reply.selection) == set(range(2, 9))
    assert reply.silhouette == pytest.approx(reply.selection[3])
    assert sorted(reply.sizes.values()) == [60, 60, 60] and reply.noise_count == 0
    assert reply.current_label == reply.labels[-1]


def test_kmeans_centres_are_in_original_units() -> None:
    x, truth = _blobs()
    reply = analyze(_request(x, method="kmeans", n_clusters=3))
    assert reply.centers is not None
    for label, centre in enumerate(reply.centers):
        members = x[np.array(reply.labels) == label]
        np.testing.assert_allclose(centre, members.mean(axis=0), rtol=1e-9)


def test_gmm_bic_picks_true_k() -> None:
    x, truth = _blobs(per=50)
    reply = analyze(_request(x, method="gmm", min_clusters=1, max_clusters=5))
    assert reply.selection_metric == "bic"
    assert min(reply.selection, key=lambda k: reply.selection[k]) == 3
    assert reply.n_clusters == 3
    assert adjusted_rand_score(truth, reply.labels) == 1.0
    assert reply.current_probabilities is not None
    assert sum(reply.current_probabilities) == pytest.approx(1.0)
    assert int(np.argmax(reply.current_probabilities)) == reply.current_label


def test_dbscan_finds_two_dense_groups_and_flags_outlier() -> None:
    rng = np.random.default_rng(2)
    x = np.vstack([rng.normal(0, 0.3, (50, 2)), rng.normal(6, 0.3, (50, 2)), [[3.0, 12.0]]])
    reply = analyze(_request(x, method="dbscan", standardize=False))
    assert reply.n_clusters == 2
    assert reply.labels[-1] == -1 and reply.noise_count >= 1
    assert reply.noise_count <= 3
    labels = np.array(reply.labels[:-1])
    assert adjusted_rand_score(np.repeat([0, 1], 50)[labels >= 0], labels[labels >= 0]) == 1.0
    assert reply.eps_used is not None and 0.0 < reply.eps_used < 3.0
    assert reply.min_samples_used == 5 and reply.seed is None
    assert reply.silhouette is not None and reply.silhouette > 0.8


def test_dbscan_only_noise_gives_zero_clusters_and_warning() -> None:
    x, _ = _blobs()
    reply = analyze(_request(x, method="dbscan", eps=1e-6))
    assert reply.n_clusters == 0 and reply.noise_count == len(x)
    assert reply.silhouette is None and reply.sizes == {} and reply.centers == []
    assert any("only noise" in w for w in reply.warnings)


def test_assets_mode_groups_two_factor_blocks() -> None:
    x = _two_factor_assets()
    names = ["A1", "A2", "A3", "B1", "B2", "B3"]
    for method in ("kmeans", "dbscan"):
        reply = analyze(_request(x, names, mode="assets", method=method))
        assert reply.n_clusters == 2, (method, reply)
        assert reply.members is not None
        groups = sorted(sorted(v) for k, v in reply.members.items() if k != "-1")
        assert groups == [["A1", "A2", "A3"], ["B1", "B2", "B3"]]
        assert reply.names == names and reply.centers is None and reply.current_label is None


def test_bad_inputs_raise_invalid_input_naming_field() -> None:
    x, _ = _blobs()
    with pytest.raises(InvalidInputError, match="n_clusters=5 must be below the number of points") as err:
        analyze(_request(x[:5], n_clusters=5))
    assert err.value.details[0]["loc"] == ["n_clusters"]
    with pytest.raises(InvalidInputError, match="fewer rows") as err:
        analyze(_request(x[:4], min_clusters=4, max_clusters=6))
    assert err.value.details[0]["loc"] == ["min_clusters"]
    flat = x.copy()
    flat[:, 1] = 7.0
    with pytest.raises(InvalidInputError, match=r"constant columns \['f1'\]"):
        analyze(_request(flat))
    with pytest.raises(InvalidInputError, match="at least 3 assets"):
        analyze(_request(x[:, :2], mode="assets"))
    with pytest.raises(InvalidInputError, match="at least 30"):
        analyze(_request(x[:10]), min_rows=30)


def test_max_below_min_clusters_is_a_schema_error() -> None:
    with pytest.raises(ValueError, match="max_clusters"):
        _request(np.eye(3), min_clusters=5, max_clusters=3)


def test_counts_above_points_are_skipped_with_a_note() -> None:
    x, _ = _blobs(per=2)
    reply = analyze(_request(x, method="kmeans"))
    assert max(reply.selection) == 5
    assert any("not tried" in w for w in reply.warnings)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ModelRegistry]:
    reg = ModelRegistry(tmp_path / "r.db", tmp_path / "artifacts")
    yield reg
    reg.close()


def _fit_request(values: np.ndarray, **kw: Any) -> ClusterFitRequest:
    cols = [f"f{i}" for i in range(values.shape[1])]
    return ClusterFitRequest(data=MatrixPayload(columns=cols, values=values.tolist()), **kw)


@pytest.mark.parametrize("method", ["kmeans", "gmm", "dbscan"])
def test_fit_then_predict_on_training_rows_gives_fit_labels(method: str, registry: ModelRegistry) -> None:
    x, _ = _blobs()
    request = _fit_request(x, method=method, n_clusters=3 if method != "dbscan" else None, name=f"c-{method}")
    fitted = fit(request, registry, min_rows=3)
    assert fitted.model.metadata["sizes"] == {str(k): v for k, v in fitted.sizes.items()}
    assert fitted.model.metadata["n_rows"] == len(x) and fitted.model.metadata["columns"] == ["f0", "f1", "f2"]
    out = predict(ClusterPredictRequest(model_id=fitted.model_id, data=request.data), registry)
    assert out.labels == fitted.labels and out.model_id == fitted.model_id
    assert (out.probabilities is not None) == (method == "gmm")
    assert out.seed == fitted.seed


def test_fit_refuses_assets_mode_before_reading_data(registry: ModelRegistry) -> None:
    request = _fit_request(_two_factor_assets(), mode="assets")
    with pytest.raises(InvalidInputError, match="cannot be stored") as err:
        check_storable(request)
    assert err.value.details[0]["loc"] == ["mode"]
    with pytest.raises(InvalidInputError, match="cannot be stored"):
        fit(request, registry, min_rows=3)
    assert registry.count() == 0


def test_predict_with_metadata_that_does_not_match_the_pipeline_raises_409(registry: ModelRegistry) -> None:
    x, _ = _blobs()
    fitted = fit(_fit_request(x, n_clusters=3), registry, min_rows=3)
    registry._db.execute("update models set metadata = ? where model_id = ?",  # a foreign entry, same artifact
                         ['{"format": 1, "columns": ["f0"], "method": "kmeans"}', fitted.model_id])
    with pytest.raises(ArtifactIntegrityError, match="cannot be rebuilt"):
        predict(ClusterPredictRequest(model_id=fitted.model_id, data=_fit_request(x).data), registry)
