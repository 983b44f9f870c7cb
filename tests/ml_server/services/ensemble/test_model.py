"""The ensemble model adapter: estimator contract, registry round trip, one cache per registry, 409s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from quantcrew.ml_server.errors import ArtifactIntegrityError, ModelNotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.adapter import NotFittedError
from quantcrew.ml_server.services.ensemble import service
from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES, WARMUP
from quantcrew.ml_server.services.ensemble.fit import TrainConfig
from quantcrew.ml_server.services.ensemble.model import EnsembleModel
from quantcrew.ml_server.services.ensemble.nets import NetConfig

WINDOW = 8
F = len(FEATURE_NAMES)


def _registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(tmp_path / "registry.db", tmp_path / "artifacts", cache_size=4)


def _unfitted(**overrides: object) -> EnsembleModel:
    configs = {a: NetConfig(arch=a, members=2, n_features=F, window=WINDOW, hidden=8, heads=2)
               for a in ("lstm", "transformer")}
    kwargs: dict[str, object] = {"window": WINDOW, "horizon": 5, "up_threshold": 0.005, "down_threshold": 0.005,
                                 "symbol": "SYN", "train": TrainConfig(epochs=2, batch_size=64, seed=3),
                                 "mc_samples": 4}
    kwargs.update(overrides)
    return EnsembleModel(configs, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(260, F))
    labels = rng.integers(0, 3, size=260).astype(np.int64)
    return features, labels


@pytest.fixture(scope="module")
def fitted(data: tuple[np.ndarray, np.ndarray]) -> EnsembleModel:
    features, labels = data
    return _unfitted().fit(features, labels, (WARMUP + WINDOW, 190), (195, 250))


def test_unfitted_model_raises_not_fitted_error() -> None:
    model = _unfitted()
    with pytest.raises(NotFittedError, match="not fitted"):
        model.logits(np.zeros((1, WINDOW, F), dtype=np.float32))
    with pytest.raises(NotFittedError):
        model.to_artifact()


def test_fit_returns_the_model_with_learned_state(fitted: EnsembleModel) -> None:
    assert isinstance(fitted, EnsembleModel) and not fitted.cancelled_
    assert list(fitted.nets_) == ["lstm", "transformer"]
    assert fitted.scaler_mean_.shape == fitted.scaler_std_.shape == (F,)
    assert set(fitted.temperatures_) == set(fitted.mc_temperatures_) == {"lstm", "transformer"}
    assert sum(fitted.weights_.values()) == pytest.approx(1.0)


def test_fit_reports_every_epoch_of_every_architecture(data: tuple[np.ndarray, np.ndarray]) -> None:
    features, labels = data
    seen: list[tuple[str, int]] = []
    _unfitted(train=TrainConfig(epochs=1, batch_size=64)).fit(
        features, labels, (WARMUP + WINDOW, 190), (195, 250), on_epoch=lambda a, e, n, t, v: seen.append((a, e)))
    assert seen == [("lstm", 1), ("transformer", 1)]


def test_cancelled_fit_leaves_the_model_unfitted(data: tuple[np.ndarray, np.ndarray]) -> None:
    features, labels = data
    model = _unfitted().fit(features, labels, (WARMUP + WINDOW, 190), (195, 250), should_stop=lambda: True)
    assert model.cancelled_
    with pytest.raises(NotFittedError):
        model.logits(np.zeros((1, WINDOW, F), dtype=np.float32))


def test_store_and_rebuild_give_the_same_answers(tmp_path: Path, fitted: EnsembleModel,
                                                 data: tuple[np.ndarray, np.ndarray]) -> None:
    registry = _registry(tmp_path)
    info = adapter.store(registry, fitted, name="ensemble-SYN", metadata={"seed": 3})
    assert info.family == "ensemble" and info.method == "lstm+transformer"
    assert info.metadata["window"] == WINDOW and info.metadata["seed"] == 3
    rebuilt, got = service.load(registry, info.model_id, "cpu")
    assert got.model_id == info.model_id
    windows = fitted.windows(data[0], np.arange(240, 250, dtype=np.int64))
    np.testing.assert_array_equal(rebuilt.windows(data[0], np.arange(240, 250, dtype=np.int64)), windows)
    for arch, logits in fitted.logits(windows).items():
        np.testing.assert_array_equal(rebuilt.logits(windows)[arch], logits)
    assert rebuilt.temperatures_ == fitted.temperatures_ and rebuilt.weights_ == fitted.weights_


def test_rebuilt_model_lives_in_the_registry_cache_per_device(tmp_path: Path, fitted: EnsembleModel) -> None:
    registry = _registry(tmp_path)
    info = adapter.store(registry, fitted, name="ensemble-SYN")
    assert not service.is_cached(registry, info.model_id, "cpu")
    first, _ = service.load(registry, info.model_id, "cpu")
    again, _ = service.load(registry, info.model_id, "cpu")
    assert again is first and service.is_cached(registry, info.model_id, "cpu")
    assert not service.is_cached(registry, info.model_id, "meta")


def test_two_registries_on_one_file_do_not_share_rebuilt_models(tmp_path: Path, fitted: EnsembleModel) -> None:
    one, two = _registry(tmp_path), _registry(tmp_path)
    info = adapter.store(one, fitted, name="ensemble-SYN")
    mine, _ = service.load(one, info.model_id, "cpu")
    assert service.is_cached(one, info.model_id, "cpu") and not service.is_cached(two, info.model_id, "cpu")
    theirs, _ = service.load(two, info.model_id, "cpu")
    assert theirs is not mine


def test_metadata_that_does_not_make_an_ensemble_is_a_409(tmp_path: Path, fitted: EnsembleModel) -> None:
    registry = _registry(tmp_path)
    artifact = fitted.to_artifact()
    broken = {k: v for k, v in artifact.metadata.items() if k != "configs"}
    info = registry.save(family="ensemble", name="broken", method=artifact.method, obj=artifact.obj, fmt="torch",
                         metadata=broken)
    with pytest.raises(ArtifactIntegrityError, match="cannot be rebuilt"):
        service.load(registry, info.model_id, "cpu")


def test_tensors_that_do_not_fit_the_architecture_are_a_409(tmp_path: Path, fitted: EnsembleModel) -> None:
    registry = _registry(tmp_path)
    artifact = fitted.to_artifact()
    state = {k: v for k, v in artifact.obj.items() if not k.startswith("transformer.")}
    info = registry.save(family="ensemble", name="short", method=artifact.method, obj=state, fmt="torch",
                         metadata=artifact.metadata)
    with pytest.raises(ArtifactIntegrityError):
        service.load(registry, info.model_id, "cpu")


def test_a_model_of_another_family_is_not_found(tmp_path: Path) -> None:
    registry = _registry(tmp_path)
    info = registry.save(family="execution", name="x", method="m", obj={"w": torch.zeros(1)}, fmt="torch")
    with pytest.raises(ModelNotFoundError):
        service.load(registry, info.model_id, "cpu")
