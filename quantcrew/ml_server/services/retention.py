"""The retention policy: the newest ``monitor.keep_versions`` versions of each model name are kept.

An older version is deleted (registry row, artifact, cached copies, and its retired deployment
row; its deployment events stay as history) unless it is still needed:

* deployed at any stage other than ``retired`` (full, canary, gradual, shadow);
* the rollback target of a deployment name (its newest previous champion that still exists);
* named by a kept version's metadata (a key ending in ``_model_id``: the regime model an RL
  policy observes through, the ensemble an execution network sizes).

The policy runs after every save (for the saved name) and on ``POST /v1/models/cleanup``.
"""

from __future__ import annotations

from quantcrew.ml_server.errors import ModelNotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.lineage import CleanupEntry, CleanupResponse
from quantcrew.ml_server.services.deployment import DeploymentStore

__all__ = ["cleanup", "protected"]


def protected(registry: ModelRegistry, deployments: DeploymentStore) -> dict[str, str]:
    """Model ids kept whatever their age, each with the reason: deployed, or a rollback target."""
    keep: dict[str, str] = {}
    names: set[str] = set()
    for d in deployments.list():
        names.add(d.name)
        if d.stage != "retired":
            keep[d.model_id] = f"deployed as {d.stage} of '{d.name}'"
    for name in sorted(names):
        for model_id in deployments.previous_champions(name):
            if _exists(registry, model_id):
                keep.setdefault(model_id, f"previous champion of '{name}' (the rollback target)")
                break
    return keep


def cleanup(registry: ModelRegistry, deployments: DeploymentStore, *, keep_versions: int, name: str | None = None,
            dry_run: bool = False) -> CleanupResponse:
    """Delete the versions the policy does not keep (of ``name``, or of every name); report each decision.

    Args:
        registry: The model registry.
        deployments: The deployment store.
        keep_versions: Newest versions kept per name.
        name: Only this model name (its versions may still be kept for versions of other names).
        dry_run: Report, delete nothing.
    """
    keep = protected(registry, deployments)
    by_name = {n: registry.versions(n) for n in registry.names()}
    kept_ids: set[str] = set(keep)
    for versions in by_name.values():
        kept_ids.update(v.model_id for v in versions[:keep_versions])
    everything = {v.model_id: v for versions in by_name.values() for v in versions}
    # versions named by kept versions are kept too, until nothing more is added
    frontier = list(kept_ids)
    while frontier:
        info = everything.get(frontier.pop())
        if info is None:
            continue
        for ref in _references(info):
            if ref in everything and ref not in kept_ids:
                kept_ids.add(ref)
                keep.setdefault(ref, f"used by {info.model_id} ('{info.name}' version {info.version})")
                frontier.append(ref)
    deleted: list[CleanupEntry] = []
    kept: list[CleanupEntry] = []
    for n in [name] if name is not None else sorted(by_name):
        for v in by_name.get(n, [])[keep_versions:]:
            if v.model_id in keep:
                kept.append(_entry(v, keep[v.model_id]))
                continue
            if not dry_run:
                try:
                    registry.delete(v.model_id)
                except ModelNotFoundError:  # deleted meanwhile (another save's cleanup)
                    continue
                deployments.forget(v.model_id)
            deleted.append(_entry(v, f"older than the newest {keep_versions} versions of '{v.name}'"))
    return CleanupResponse(dry_run=dry_run, keep_versions=keep_versions, deleted=deleted, kept=kept)


def _references(info: ModelInfo) -> list[str]:
    return [v for k, v in info.metadata.items() if k.endswith("_model_id") and isinstance(v, str)]


def _exists(registry: ModelRegistry, model_id: str) -> bool:
    try:
        registry.get(model_id)
    except ModelNotFoundError:
        return False
    return True


def _entry(info: ModelInfo, reason: str) -> CleanupEntry:
    return CleanupEntry(model_id=info.model_id, name=info.name, version=info.version, reason=reason)
