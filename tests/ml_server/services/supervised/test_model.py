"""Supervised model (the model adapter): estimator contract, persistence, not-fitted."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.services.adapter import NotFittedError
from quantcrew.ml_server.services.supervised.model import SupervisedModel
from quantcrew.ml_server.services.supervised.service import evaluate
from tests.ml_server.services.supervised.test_service import _analyze, separable_data


def test_from_parts_round_trip_and_foreign_metadata() -> None:
    features, y = separable_data(80)
    model, _ = evaluate(_analyze(features, y, task="classification", n_estimators=10), min_rows=30)
    metadata = json.loads(json.dumps(model.metadata()))
    again = SupervisedModel.from_parts(model.estimator_, metadata)
    x = np.asarray(features["values"])
    assert again.predict(x) == model.predict(x)
    with pytest.raises(ValueError, match="format"):
        SupervisedModel.from_parts(model.estimator_, {**metadata, "format": 7})
    with pytest.raises(ValueError, match="3 features"):
        SupervisedModel.from_parts(model.estimator_, {**metadata, "feature_names": ["a", "b", "c"]})


def test_fit_returns_self_with_learned_state() -> None:
    x = np.random.default_rng(0).normal(size=(60, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    model = SupervisedModel(task="classification", n_estimators=5)
    assert model.fit(x, y, feature_names=["a", "b"], classes=["no", "yes"]) is model
    assert model.feature_names_ == ["a", "b"] and model.classes_ == ["no", "yes"] and model.warnings_ == []
    assert set(model.predict(x[:5])) <= {"no", "yes"}


def test_predict_before_fit_raises_not_fitted() -> None:
    with pytest.raises(NotFittedError):
        SupervisedModel().predict(np.zeros((1, 2)))
    with pytest.raises(NotFittedError):
        SupervisedModel().to_artifact()


def test_from_artifact_restores_the_fit_settings() -> None:
    features, y = separable_data(80)
    model, _ = evaluate(_analyze(features, y, task="classification", n_estimators=7, seed=2), min_rows=30)
    artifact = model.to_artifact()
    assert (artifact.fmt, artifact.method, artifact.obj) == ("skops", "random_forest", model.estimator_)
    params = {"n_estimators": 7, "seed": 2, "importance": "auto"}  # the fit request's, as the service stores them
    metadata = {**json.loads(json.dumps(artifact.metadata)), "params": params}
    info = ModelInfo(model_id="supervised-1", name="s", version=1, family="supervised", method="random_forest",
                     sha256="0" * 64, created_at=datetime.now(UTC), stage="full", metadata=metadata)
    rebuilt = SupervisedModel.from_artifact(artifact.obj, info)
    assert (rebuilt.task, rebuilt.n_estimators, rebuilt.seed) == ("classification", 7, 2)
    x = np.asarray(features["values"])
    assert rebuilt.predict(x) == model.predict(x)
