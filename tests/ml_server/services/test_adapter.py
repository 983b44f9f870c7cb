"""The generic model-adapter paths: store, fit-and-store, rebuild-or-409, the stored reply."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from quantcrew.ml_server.errors import ArtifactIntegrityError, ModelNotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo, WireModel
from quantcrew.ml_server.services.adapter import (
    Artifact,
    NotFittedError,
    is_cached,
    rebuild,
    store,
    store_fit,
    stored_reply,
)


class Toy:
    """A minimal adapter: its learned state is one number, kept in the metadata."""

    family: ClassVar[str] = "regime"

    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = scale

    def fit(self, value: float) -> Toy:
        self.value_ = value * self.scale
        return self

    def to_artifact(self) -> Artifact:
        if not hasattr(self, "value_"):
            raise NotFittedError("Toy is not fitted")
        return Artifact(obj=None, fmt="json", method="toy", metadata={"value_": self.value_})

    @classmethod
    def from_artifact(cls, obj: Any, info: ModelInfo, **context: Any) -> Toy:
        toy = cls(scale=float(context.get("scale", 1.0)))
        toy.value_ = float(info.metadata["value_"])
        return toy


class Reply(WireModel):
    answer: float
    model_id: str | None = None
    model_version: int | None = None


class StoredReply(Reply):
    model: ModelInfo


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ModelRegistry]:
    reg = ModelRegistry(tmp_path / "r.db", tmp_path / "artifacts")
    yield reg
    reg.close()


def test_store_writes_the_adapter_metadata_extended_by_the_caller(registry: ModelRegistry) -> None:
    info = store(registry, Toy().fit(2.0), name="toy", metadata={"n_bars": 5})
    assert (info.family, info.method, info.version) == ("regime", "toy", 1)
    assert info.metadata == {"value_": 2.0, "n_bars": 5}
    stored, _ = registry.load(info.model_id)
    assert stored == info.metadata  # a json artifact without an object of its own is its full metadata


def test_store_records_full_stage_by_default_and_the_stage_asked_for(registry: ModelRegistry) -> None:
    full = store(registry, Toy().fit(1.0), name="toy")
    shadow = store(registry, Toy().fit(2.0), name="toy", stage="shadow")
    assert (full.stage, shadow.stage) == ("full", "shadow") and shadow.version == 2
    assert registry.get(shadow.model_id).stage == "shadow" and registry.get(full.model_id).stage == "full"
    assert shadow.metadata == {"value_": 2.0}  # the stage is an entry field, not metadata


def test_store_of_an_unfitted_adapter_raises_not_fitted(registry: ModelRegistry) -> None:
    with pytest.raises(NotFittedError):
        store(registry, Toy(), name="toy")
    assert registry.count() == 0


def test_store_fit_returns_the_reply_with_its_registry_entry(registry: ModelRegistry) -> None:
    reply = store_fit(registry, Toy().fit(3.0), Reply(answer=1.5), StoredReply, name="toy")
    assert isinstance(reply, StoredReply) and reply.answer == 1.5
    assert reply.model_id == reply.model.model_id and reply.model_version == reply.model.version == 1


def test_stored_reply_keeps_every_field_and_adds_provenance(registry: ModelRegistry) -> None:
    info = store(registry, Toy().fit(1.0), name="toy")
    reply = stored_reply(Reply(answer=4.0), StoredReply, info)
    assert reply.model_dump() == {"answer": 4.0, "model_id": info.model_id, "model_version": 1,
                                  "model": info.model_dump()}


def test_rebuild_caches_one_object_per_context(registry: ModelRegistry) -> None:
    info = store(registry, Toy().fit(2.0), name="toy")
    plain, got = rebuild(registry, info.model_id, Toy)
    scaled, _ = rebuild(registry, info.model_id, Toy, scale=3)
    assert got.model_id == info.model_id and plain.value_ == 2.0 and scaled.scale == 3.0
    assert rebuild(registry, info.model_id, Toy)[0] is plain
    assert registry.is_cached(info.model_id, "model") and registry.is_cached(info.model_id, "model:scale=3")


def test_is_cached_follows_rebuild_with_the_same_context(registry: ModelRegistry) -> None:
    info = store(registry, Toy().fit(2.0), name="toy")
    assert not is_cached(registry, info.model_id, Toy) and not is_cached(registry, info.model_id, Toy, scale=3)
    rebuild(registry, info.model_id, Toy, scale=3)
    assert is_cached(registry, info.model_id, Toy, scale=3) and registry.is_cached(info.model_id, "model:scale=3")
    assert not is_cached(registry, info.model_id, Toy)  # another context is another cached object
    assert not is_cached(registry, info.model_id, Toy, scale=4)
    rebuild(registry, info.model_id, Toy)
    assert is_cached(registry, info.model_id, Toy)


def test_is_cached_keys_context_independently_of_keyword_order(registry: ModelRegistry) -> None:
    info = store(registry, Toy().fit(2.0), name="toy")
    rebuild(registry, info.model_id, Toy, scale=2, device="cpu")
    assert is_cached(registry, info.model_id, Toy, device="cpu", scale=2)
    assert registry.is_cached(info.model_id, "model:device=cpu,scale=2")


def test_is_cached_of_an_unknown_id_is_false_without_raising(registry: ModelRegistry) -> None:
    assert not is_cached(registry, "regime-nope", Toy)


def test_rebuild_of_an_entry_that_makes_no_model_is_409(registry: ModelRegistry) -> None:
    info = registry.save(family="regime", name="toy", method="toy", obj={}, fmt="json", metadata={"other": 1})
    with pytest.raises(ArtifactIntegrityError, match="cannot be rebuilt"):
        rebuild(registry, info.model_id, Toy)


def test_rebuild_of_another_family_or_an_unknown_id_is_404(registry: ModelRegistry) -> None:
    info = registry.save(family="cluster", name="c", method="kmeans", obj={}, fmt="json")
    with pytest.raises(ModelNotFoundError, match="not a regime model"):
        rebuild(registry, info.model_id, Toy)
    with pytest.raises(ModelNotFoundError):
        rebuild(registry, "regime-nope", Toy)
