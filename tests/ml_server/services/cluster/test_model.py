"""Cluster model (the model adapter): predict on new rows, persistence, refusals, not-fitted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.services.adapter import NotFittedError
from quantcrew.ml_server.services.cluster.model import ClusterModel
from quantcrew.ml_server.services.matrix import Matrix, matrix_from_payload
from tests.ml_server.services.cluster.test_service import _blobs, _two_factor_assets


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with threadpool_limits(limits=1):
        yield


def _matrix(x: np.ndarray) -> Matrix:
    return matrix_from_payload(MatrixPayload(columns=[f"f{i}" for i in range(x.shape[1])], values=x.tolist()),
                               min_rows=1)


def _info(metadata: dict[str, Any]) -> ModelInfo:
    return ModelInfo(model_id="cluster-1", name="c", version=1, family="cluster", method="kmeans", sha256="0" * 64,
                     created_at=datetime.now(UTC), stage="full", metadata=json.loads(json.dumps(metadata)))


@pytest.mark.parametrize("method", ["kmeans", "gmm", "dbscan"])
def test_predict_on_training_rows_gives_fit_labels(method: str) -> None:
    x, _ = _blobs()
    matrix = _matrix(x)
    model = ClusterModel(method=method, n_clusters=3 if method != "dbscan" else None).fit(matrix)
    assert model.predict(matrix).tolist() == model.labels_.tolist()
    assert (model.predict_proba(matrix) is not None) == (method == "gmm")


def test_dbscan_predict_far_point_is_noise() -> None:
    x, _ = _blobs()
    model = ClusterModel(method="dbscan").fit(_matrix(x))
    far = _matrix(np.array([[100.0, -5000.0, 2.0], x[0]]))
    assert model.predict(far).tolist() == [-1, int(model.labels_[0])]


def test_predict_refuses_other_columns() -> None:
    x, _ = _blobs()
    model = ClusterModel(n_clusters=3).fit(_matrix(x))
    other = matrix_from_payload(MatrixPayload(columns=["f0", "g1"], values=[[1.0, 2.0]]), min_rows=1)
    with pytest.raises(InvalidInputError) as err:
        model.predict(other)
    assert "missing ['f1', 'f2']" in err.value.message and "extra ['g1']" in err.value.message


def test_fit_returns_self_with_learned_state() -> None:
    x, _ = _blobs()
    model = ClusterModel(n_clusters=3)
    assert model.fit(_matrix(x)) is model
    assert model.n_clusters_ == 3 and model.labels_.shape == (len(x),) and model.columns_ == ["f0", "f1", "f2"]
    assert model.cluster_centers_ is not None and model.cluster_centers_.shape == (3, 3)


def test_to_artifact_then_from_artifact_predicts_the_same() -> None:
    x, _ = _blobs()
    model = ClusterModel(method="gmm", n_clusters=3).fit(_matrix(x))
    artifact = model.to_artifact()
    assert (artifact.fmt, artifact.method, artifact.obj) == ("skops", "gmm", model.pipeline_)
    rebuilt = ClusterModel.from_artifact(artifact.obj, _info(artifact.metadata))
    assert rebuilt.predict(_matrix(x)).tolist() == model.labels_.tolist()


@pytest.mark.parametrize(
    "change",
    [{"format": 2}, {"method": "dbscan"}, {"method": "nope"}, {"columns": ["f0"]}, {"columns": None}],
)
def test_from_artifact_refuses_metadata_that_does_not_describe_the_pipeline(change: dict[str, Any]) -> None:
    x, _ = _blobs()
    artifact = ClusterModel(n_clusters=3).fit(_matrix(x)).to_artifact()
    with pytest.raises((ValueError, KeyError, TypeError)):  # each one a 409 when the registry rebuilds
        ClusterModel.from_artifact(artifact.obj, _info({**artifact.metadata, **change}))
    with pytest.raises(ValueError, match="not a cluster pipeline"):
        ClusterModel.from_artifact({"not": "a pipeline"}, _info(artifact.metadata))


def test_assets_mode_and_unfitted_models_cannot_be_stored() -> None:
    with pytest.raises(NotFittedError):
        ClusterModel(mode="assets").fit(_matrix(_two_factor_assets())).to_artifact()
    with pytest.raises(NotFittedError):
        ClusterModel().predict(_matrix(np.eye(3)))
