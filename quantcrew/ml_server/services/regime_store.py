"""A fitted regime detector in the registry: the HMM through skops, or the rules' JSON on fallback.

Used by the regime routes and by the rl family, whose policies observe regime probabilities.
"""

from __future__ import annotations

from typing import Any

from quantcrew.ml_server.errors import ArtifactIntegrityError
from quantcrew.ml_server.registry import ArtifactFormat, ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.services.regime import RegimeDetector

__all__ = ["load_detector", "save_detector"]


def save_detector(registry: ModelRegistry, detector: RegimeDetector, *, name: str,
                  metadata: dict[str, Any]) -> ModelInfo:
    """Store ``detector`` as a new version of ``name``; ``metadata`` extends its own."""
    full = detector.to_metadata()
    full.update(metadata)
    obj: Any = detector.hmm_ if detector.hmm_ is not None else full
    fmt: ArtifactFormat = "skops" if detector.hmm_ is not None else "json"
    return registry.save(family="regime", name=name, method=detector.method_used_, obj=obj, fmt=fmt,
                         metadata=full)


def load_detector(registry: ModelRegistry, model_id: str) -> tuple[RegimeDetector, ModelInfo]:
    """Rebuild a stored detector (SHA-256 and allow-list checked by the registry).

    Raises:
        ModelNotFoundError: unknown id, or not a regime model.
        ArtifactIntegrityError: the stored parts do not make a detector.
    """
    stored, info = registry.load(model_id, family="regime")
    hmm = None if isinstance(stored, dict) else stored
    try:
        return RegimeDetector.from_parts(hmm, info.metadata), info
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactIntegrityError(f"regime model '{model_id}' cannot be rebuilt: {exc}",
                                     details={"model_id": model_id}) from exc
