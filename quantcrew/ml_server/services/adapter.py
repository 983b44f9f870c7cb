"""Model adapters: the one fit-and-store path and the one rebuild-or-409 path of every stateful family.

A family that stores models gives each one an adapter class following scikit-learn's estimator
contract (configuration in ``__init__``, ``fit`` returns ``self``, learned state in attributes
ending in ``_``, a clear not-fitted error) plus two methods that connect it to the registry:

- ``to_artifact()`` -> :class:`Artifact`: what to write (the object, its format, the method
  used and the metadata needed to rebuild it);
- ``from_artifact(obj, info, **context)`` (a classmethod): the fitted adapter again, from the
  verified artifact and its registry entry; ``context`` is what the rebuilt object depends on
  besides the artifact (a torch device, say) and keys the cached copy.

:func:`store` (with :func:`store_fit`, the whole fit-and-store path of a family's ``fit`` verb) and
:func:`rebuild` are then written once for every family: a stored artifact that does not make the
model it claims to be is a 409 (:class:`ArtifactIntegrityError`), never a 500, and rebuilt models
live in the registry's one cache (:func:`is_cached` tells whether a :func:`rebuild` would be
answered from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, Self, TypeVar

from pydantic import BaseModel

from quantcrew.ml_server.registry import ArtifactFormat, ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo

__all__ = [
    "Artifact",
    "ModelAdapter",
    "NotFittedError",
    "is_cached",
    "rebuild",
    "store",
    "store_fit",
    "stored_reply",
]


class NotFittedError(RuntimeError):
    """An adapter was asked to predict or be stored before ``fit`` (a programming error, not input)."""


@dataclass(frozen=True)
class Artifact:
    """What a fitted adapter writes to the registry.

    Attributes:
        obj: The object to serialise. ``None`` with ``fmt="json"`` means the model's learned state
            is all in its metadata: the full metadata (the adapter's and the caller's) is written
            as the artifact, so the file's checksum covers the whole entry.
        fmt: The registry format (``skops``, ``torch`` or ``json``).
        method: The method recorded in the registry entry.
        metadata: What ``from_artifact`` needs besides the object (JSON-able).
    """

    obj: Any
    fmt: ArtifactFormat
    method: str
    metadata: dict[str, Any] = field(default_factory=dict)


class ModelAdapter(Protocol):
    """The registry side of a stateful family's model (see the module docstring)."""

    family: ClassVar[str]

    def to_artifact(self) -> Artifact: ...

    @classmethod
    def from_artifact(cls, obj: Any, info: ModelInfo, **context: Any) -> Self: ...


A = TypeVar("A", bound=ModelAdapter)
R = TypeVar("R", bound=BaseModel)


def store(registry: ModelRegistry, model: ModelAdapter, *, name: str,
          metadata: dict[str, Any] | None = None, stage: str = "full", trigger: str = "manual") -> ModelInfo:
    """Write a fitted model as a new version of ``name``.

    Args:
        registry: The model registry.
        model: The fitted adapter.
        name: Registry name; each call adds a version.
        metadata: Facts about the training data, added to the adapter's own metadata.
        stage: The registry stage recorded with the version (an ensemble fit may ask for
            ``shadow`` or ``canary``, say).
        trigger: Why it was trained (the training request's ``trigger``), recorded in its lineage
            with the span and hash the metadata gives (``data_start``/``data_end`` or
            ``train_start``/``train_end``, ``data_hash``).

    Raises:
        NotFittedError: ``model`` was not fitted.
    """
    artifact = model.to_artifact()
    full = dict(artifact.metadata)
    full.update(metadata or {})
    obj = full if artifact.obj is None and artifact.fmt == "json" else artifact.obj
    return registry.save(family=type(model).family, name=name, method=artifact.method, obj=obj,
                         fmt=artifact.fmt, metadata=full, stage=stage, trigger=trigger)


def store_fit(registry: ModelRegistry, model: ModelAdapter, reply: BaseModel, response_type: type[R], *,
              name: str, metadata: dict[str, Any] | None = None, trigger: str = "manual") -> R:
    """The fit-and-store path: write ``model`` as a new version of ``name``, return ``reply`` stored.

    Args:
        registry: The model registry.
        model: The fitted adapter.
        reply: The stateless reply the fit already computed (validated when it was built).
        response_type: The family's fit reply type (``reply``'s fields plus the registry entry).
        name: Registry name; each fit adds a version.
        metadata: Facts about the training data, added to the adapter's own metadata.
        trigger: Why it was trained (the request's ``trigger``).
    """
    return stored_reply(reply, response_type, store(registry, model, name=name, metadata=metadata, trigger=trigger))


def rebuild(registry: ModelRegistry, model_id: str, adapter: type[A], **context: Any) -> tuple[A, ModelInfo]:
    """The stored model ``model_id`` as an ``adapter``, from the registry's cache or rebuilt.

    Raises:
        ModelNotFoundError: unknown id, or a model of another family (404).
        ArtifactIntegrityError: the artifact is missing, changed, refused, or does not rebuild (409).
    """
    return registry.rebuild(model_id, family=adapter.family,
                            build=lambda obj, info: adapter.from_artifact(obj, info, **context),
                            variant=_variant(context))


def is_cached(registry: ModelRegistry, model_id: str, adapter: type[ModelAdapter], **context: Any) -> bool:
    """Whether :func:`rebuild` with the same arguments would answer from the registry's cache now.

    Nothing is read or rebuilt, and the answer may be stale by the time the model is used (another
    request can evict it): it only lets a caller pick a cheap path, never skip the rebuild.

    Args:
        registry: The model registry.
        model_id: The registry id.
        adapter: The class :func:`rebuild` would be given (taken so that both calls read alike).
        **context: What :func:`rebuild` would be given besides the artifact (e.g. ``device="cpu"``).
    """
    return registry.is_cached(model_id, _variant(context))


def _variant(context: dict[str, Any]) -> str:
    """The cache variant of a model rebuilt with ``context``: ``model``, or e.g. ``model:device=cpu``."""
    return "model" if not context else "model:" + ",".join(f"{k}={context[k]}" for k in sorted(context))


def stored_reply(reply: BaseModel, response_type: type[R], info: ModelInfo) -> R:
    """The fit reply once the model is stored: ``reply``'s fields plus the new id, version and entry.

    The answer was already computed and validated when it was built: only the provenance changes.
    """
    fields = {name: getattr(reply, name) for name in type(reply).model_fields}
    fields.update(model_id=info.model_id, model_version=info.version, model=info)
    return response_type.model_construct(**fields)
