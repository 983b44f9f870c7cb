"""The registry, read-only over HTTP: list entries and look one up."""

from __future__ import annotations

from fastapi import APIRouter, Query

from quantcrew.ml_server.deps import RegistryDep
from quantcrew.ml_server.schemas.common import ErrorBody, ModelInfo

router = APIRouter(prefix="/models", tags=["models"])


@router.get("")
def list_models(registry: RegistryDep, family: str | None = Query(default=None, max_length=32)) -> list[ModelInfo]:
    """Every stored model, newest first, optionally of one family."""
    return registry.list(family)


@router.get("/{model_id}", responses={404: {"model": ErrorBody}})
def get_model(model_id: str, registry: RegistryDep) -> ModelInfo:
    """One stored model's entry: version, method, SHA-256, metadata."""
    return registry.get(model_id)
