"""Decompose model (the model adapter): transform new rows, persistence, refusals, not-fitted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.matrix import MatrixPayload
from quantcrew.ml_server.services.adapter import NotFittedError
from quantcrew.ml_server.services.decompose.model import DecompositionModel
from quantcrew.ml_server.services.matrix import Matrix, matrix_from_payload
from tests.ml_server.services.decompose.test_service import _factor_returns


def _matrix(x: np.ndarray, columns: list[str] | None = None) -> Matrix:
    cols = columns or [f"a{i}" for i in range(x.shape[1])]
    return matrix_from_payload(MatrixPayload(columns=cols, values=x.tolist()), min_rows=1)


def _info(metadata: dict[str, Any]) -> ModelInfo:
    return ModelInfo(model_id="decompose-1", name="d", version=1, family="decompose", method="pca",
                     sha256="0" * 64, created_at=datetime.now(UTC), stage="full",
                     metadata=json.loads(json.dumps(metadata)))


def test_transform_reproduces_training_scores() -> None:
    x = _factor_returns()
    cases: list[dict[str, Any]] = [{"method": "pca", "standardize": True}, {"method": "ica", "n_components": 2}]
    for kw in cases:
        model = DecompositionModel(**kw).fit(_matrix(x))
        np.testing.assert_allclose(model.transform(_matrix(x)), model.fit_.scores, atol=1e-10)
        assert model.component_names_ == [f"{'pc' if kw['method'] == 'pca' else 'ic'}{j + 1}"
                                          for j in range(model.n_components_)]


def test_transform_refuses_other_columns() -> None:
    x = _factor_returns()
    model = DecompositionModel().fit(_matrix(x))
    with pytest.raises(InvalidInputError) as err:
        model.transform(_matrix(x[:5], ["a0", "a1", "a2", "a3", "zz"]))
    assert "missing ['a4']" in err.value.message and "extra ['zz']" in err.value.message
    with pytest.raises(InvalidInputError, match="another order"):
        model.transform(_matrix(x[:5], ["a1", "a0", "a2", "a3", "a4"]))


def test_nmf_transform_refuses_input_below_the_fitted_shift() -> None:
    x = _factor_returns()
    model = DecompositionModel(method="nmf", nmf_shift=True, n_components=2).fit(_matrix(x))
    with pytest.raises(InvalidInputError, match="below the fitted NMF shift"):
        model.transform(_matrix(x - 1.0))


@pytest.mark.parametrize("method", ["pca", "ica", "nmf"])
def test_to_artifact_then_from_artifact_transforms_the_same(method: str) -> None:
    x = _factor_returns()
    model = DecompositionModel(method=method, n_components=2, nmf_shift=True).fit(_matrix(x))
    artifact = model.to_artifact()
    assert (artifact.fmt, artifact.method, artifact.obj) == ("skops", method, model.pipeline_)
    rebuilt = DecompositionModel.from_artifact(artifact.obj, _info(artifact.metadata))
    np.testing.assert_array_equal(rebuilt.transform(_matrix(x)), model.transform(_matrix(x)))
    assert rebuilt.component_names_ == model.component_names_ and rebuilt.shift_ == model.shift_


@pytest.mark.parametrize("change", [{"format": 0}, {"method": "ica"}, {"columns": ["a0"]},
                                    {"component_names": ["pc1", "pc2", "pc3"]}, {"shift": "x"}])
def test_from_artifact_refuses_metadata_that_does_not_describe_the_pipeline(change: dict[str, Any]) -> None:
    artifact = DecompositionModel(n_components=2).fit(_matrix(_factor_returns())).to_artifact()
    with pytest.raises((ValueError, KeyError, TypeError)):
        DecompositionModel.from_artifact(artifact.obj, _info({**artifact.metadata, **change}))


def test_unfitted_model_refuses_to_transform_or_be_stored() -> None:
    with pytest.raises(NotFittedError):
        DecompositionModel().transform(_matrix(np.eye(3)))
    with pytest.raises(NotFittedError):
        DecompositionModel().to_artifact()
