"""The execution model adapter: estimator contract, registry round trip, one cache per registry, 409s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from quantcrew.ml_server.errors import ArtifactIntegrityError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.adapter import NotFittedError
from quantcrew.ml_server.services.execution import service
from quantcrew.ml_server.services.execution.fit import ExecTrainConfig
from quantcrew.ml_server.services.execution.inputs import EXECUTION_INPUTS, SeededRows
from quantcrew.ml_server.services.execution.model import ExecutionModel
from quantcrew.ml_server.services.execution.net import ExecutionConfig

D = len(EXECUTION_INPUTS)


def _registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts", cache_size=4)


def _data(n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, D))
    x[:, 0] = rng.choice([-1.0, 1.0], n)
    size = np.clip(0.5 + 0.2 * x[:, 1], 0.0, 1.0)
    timing = (x[:, 5] > 0.3).astype(np.int64)
    return x, size, timing


@pytest.fixture(scope="module")
def fitted() -> ExecutionModel:
    x, size, timing = _data()
    return ExecutionModel(ExecutionConfig(hidden=(16,)), train=ExecTrainConfig(epochs=3, seed=2)).fit(x, size, timing)


def test_unfitted_model_raises_not_fitted_error() -> None:
    model = ExecutionModel()
    with pytest.raises(NotFittedError, match="not fitted"):
        model.sample(np.zeros((1, D), dtype=np.float32), 4, None)
    with pytest.raises(NotFittedError):
        model.to_artifact()


def test_fit_returns_the_model_with_learned_state(fitted: ExecutionModel) -> None:
    assert not fitted.cancelled_ and fitted.history_ is not None and fitted.history_.epochs_run >= 1
    assert (fitted.n_train_, fitted.n_validation_) == (240, 60)
    assert not fitted.net_.training


def test_cancelled_fit_leaves_the_model_unfitted() -> None:
    x, size, timing = _data()
    model = ExecutionModel(train=ExecTrainConfig(epochs=2)).fit(x, size, timing, should_stop=lambda: True)
    assert model.cancelled_
    with pytest.raises(NotFittedError):
        model.transform(x[:1])


def test_store_and_rebuild_give_the_same_draws(tmp_path: Path, fitted: ExecutionModel) -> None:
    registry = _registry(tmp_path)
    info = adapter.store(registry, fitted, name="execution-SYN", metadata={"symbol": "SYN"})
    assert info.family == "execution" and info.method == "mc_dropout_mlp"
    assert list(info.metadata)[:4] == ["config", "scaler", "inputs", "symbol"]
    rebuilt, got = service.load(registry, info.model_id, "cpu")
    assert got.model_id == info.model_id and rebuilt.history_ is None
    x = _data()[0][:5]
    np.testing.assert_array_equal(rebuilt.transform(x), fitted.transform(x))
    a, b = rebuilt.sample(rebuilt.transform(x), 8, 1), fitted.sample(fitted.transform(x), 8, 1)
    np.testing.assert_array_equal(a.size, b.size)
    np.testing.assert_array_equal(a.wait_prob, b.wait_prob)


def test_batch_sample_draws_each_request_as_it_would_alone(fitted: ExecutionModel) -> None:
    x = fitted.transform(_data()[0][:5])
    out = fitted.batch_sample([SeededRows(x[:2], 7), SeededRows(x[2:], 8)], 6)
    assert [o.size.shape for o in out] == [(6, 2), (6, 3)]
    alone = fitted.sample(x[2:], 6, 8)
    np.testing.assert_array_equal(out[1].size, alone.size)
    np.testing.assert_array_equal(out[1].wait_prob, alone.wait_prob)
    assert len(SeededRows(x[2:], 8)) == 3  # the batcher counts rows, not requests


def test_rebuilt_model_lives_in_the_registry_cache_of_its_app(tmp_path: Path, fitted: ExecutionModel) -> None:
    one, two = _registry(tmp_path), _registry(tmp_path)
    info = adapter.store(one, fitted, name="execution-SYN")
    first, _ = service.load(one, info.model_id, "cpu")
    assert service.load(one, info.model_id, "cpu")[0] is first
    assert one.is_cached(info.model_id, "model:device=cpu") and not two.is_cached(info.model_id, "model:device=cpu")
    assert service.load(two, info.model_id, "cpu")[0] is not first


def test_metadata_without_a_scaler_is_a_409(tmp_path: Path, fitted: ExecutionModel) -> None:
    registry = _registry(tmp_path)
    artifact = fitted.to_artifact()
    info = registry.save(family="execution", name="broken", method=artifact.method, obj=artifact.obj, fmt="torch",
                         metadata={"config": artifact.metadata["config"]})
    with pytest.raises(ArtifactIntegrityError, match="cannot be rebuilt"):
        service.load(registry, info.model_id, "cpu")


