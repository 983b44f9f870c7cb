"""A model version's life after training, for every stateful family: stages, promotion, rollback, lineage.

The deployment stages (:mod:`~quantcrew.ml_server.services.deployment`) were the ensemble's; they
are every stateful family's here, addressed by model id (a stage) or by deployment name (promote,
rollback). A version deploys under its registry name, except an RL policy trained for a symbol,
which deploys as ``rl-<agent>-<symbol>`` (the name the crew asks for), and a version already
deployed, which keeps its deployment name.

* :meth:`Lifecycle.stage` puts a version at any stage (a hand override: no gate asked);
* :meth:`Lifecycle.promote` moves the name's candidate one step, ``shadow -> canary -> full``
  (``gradual -> full``), or to a named later stage; a gate verdict given with it is recorded and a
  failed one is refused unless forced;
* :meth:`Lifecycle.rollback` puts the previous champion back at ``full`` (the current one retired,
  recorded as rolled back, so that it is never the next rollback target);
* :meth:`Lifecycle.lineage` walks a version's parents with their deployment history.

Every step is a row of ``deployment_events`` (the store records it in the same transaction).
:meth:`Lifecycle.attach` connects the registry to it: a new version's parent is its name's full
deployment, and the retention policy (:mod:`~quantcrew.ml_server.services.retention`) runs after
each save.
"""

from __future__ import annotations

import logging

from quantcrew.ml_server.errors import ConflictError, ModelNotFoundError, NotFoundError
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.lineage import (
    CleanupResponse,
    DeploymentEvent,
    LineageNode,
    LineageResponse,
    PromoteRequest,
    RollbackRequest,
    RollbackResponse,
    StageChange,
    StageRequest,
)
from quantcrew.ml_server.schemas.rl import rl_deployment_name
from quantcrew.ml_server.services import retention
from quantcrew.ml_server.services.deployment import Deployment, DeploymentStore, deployment_info

__all__ = ["CANDIDATE_STAGES", "DEFAULT_CANARY_SHARE", "Lifecycle", "deployment_name"]

logger = logging.getLogger(__name__)

CANDIDATE_STAGES = ("shadow", "canary", "gradual")
DEFAULT_CANARY_SHARE = 0.1
"""The share a shadow promoted to canary answers when the request names none."""
_RANK = {"shadow": 0, "canary": 1, "gradual": 1, "full": 2}
_NEXT = {"shadow": "canary", "canary": "full", "gradual": "full"}
_MAX_CHAIN = 1000


def deployment_name(info: ModelInfo, deployments: DeploymentStore) -> str:
    """The name a version deploys under (see the module docstring)."""
    current = deployments.get(info.model_id)
    if current is not None:
        return current.name
    agent, symbol = info.metadata.get("agent"), info.metadata.get("symbol")
    if info.family == "rl" and isinstance(agent, str) and isinstance(symbol, str) and symbol:
        return rl_deployment_name(agent, symbol)
    return info.name


class Lifecycle:
    """Stages, promotion, rollback, lineage and retention over one registry and one deployment store.

    Args:
        registry: The model registry.
        deployments: The deployment store (same SQLite file, its own tables).
        keep_versions: Newest versions kept per model name by the retention policy.
    """

    def __init__(self, registry: ModelRegistry, deployments: DeploymentStore, *, keep_versions: int) -> None:
        if keep_versions < 1:
            raise ValueError(f"keep_versions must be at least 1, got {keep_versions}")
        self.registry = registry
        self.deployments = deployments
        self.keep_versions = keep_versions

    def attach(self) -> None:
        """Make the registry record each new version's parent from the deployments and clean up after saves."""
        self.registry.parent_of = self._parent_of
        self.registry.after_save.append(self._after_save)

    def _parent_of(self, name: str) -> str | None:
        champion = self.deployments.champion(name)
        return champion.model_id if champion is not None else None

    def _after_save(self, info: ModelInfo) -> None:
        report = self.cleanup(name=info.name, dry_run=False)
        if report.deleted:
            logger.info("retention: deleted %d old versions of %s", len(report.deleted), info.name)

    # -- stages ------------------------------------------------------------------------------

    def stage(self, model_id: str, req: StageRequest) -> StageChange:
        """Put ``model_id`` at ``req.stage`` (its name's other full version or candidate retired as the stage asks).

        Raises:
            ModelNotFoundError: unknown id (404).
            InvalidInputError: a share or ramp the stage does not take, or out of range (422).
        """
        info = self.registry.get(model_id)
        name = deployment_name(info, self.deployments)
        before = self._last_event_id()
        d = self.deployments.set(model_id=info.model_id, name=name, version=info.version, stage=req.stage,
                                 share=req.share, ramp_seconds=req.ramp_seconds, action="stage", reason=req.reason,
                                 actor=req.actor)
        return StageChange(deployment=deployment_info(d), events=self._events_since(name, before))

    def promote(self, name: str, req: PromoteRequest) -> StageChange:
        """Move the name's candidate one step (or to ``req.to_stage``).

        Raises:
            NotFoundError: no version of ``name`` stored or deployed (404).
            ConflictError: nothing to promote, ``req.model_id`` is not a candidate of the name, a
                stage that is not later than the candidate's, or a failed gate without ``force`` (409).
        """
        deployed = self._known(name)
        candidates = [d for d in deployed if d.stage in CANDIDATE_STAGES]
        if req.model_id is not None:
            chosen = next((d for d in candidates if d.model_id == req.model_id), None)
            if chosen is None:
                raise ConflictError(f"model '{req.model_id}' is not a shadow, canary or gradual version of '{name}'",
                                    details=[{"loc": ["model_id"], "msg": "not a candidate of this name"}])
        elif not candidates:
            raise ConflictError(f"nothing to promote: '{name}' has no shadow, canary or gradual version",
                                details={"name": name, "stages": {d.model_id: d.stage for d in deployed}})
        else:  # the candidate furthest along, then the newest
            chosen = max(candidates, key=lambda d: (_RANK[d.stage], d.version))
        target = req.to_stage or _NEXT[chosen.stage]
        if _RANK[target] <= _RANK[chosen.stage]:
            raise ConflictError(f"cannot promote '{chosen.model_id}' from {chosen.stage} to {target}: not a later "
                                "stage", details=[{"loc": ["to_stage"], "msg": f"must come after {chosen.stage}"}])
        if req.gate is not None and not req.gate.passed and not req.force:
            raise ConflictError(f"the gate failed, so '{chosen.model_id}' is not promoted: {req.gate.summary}",
                                details=[{"loc": ["gate"], "msg": "failed; send force=true to override"}])
        share = req.share
        if target == "canary" and share is None:
            share = DEFAULT_CANARY_SHARE
        before = self._last_event_id()
        d = self.deployments.set(model_id=chosen.model_id, name=name, version=chosen.version, stage=target,
                                 share=share, ramp_seconds=req.ramp_seconds, action="promote", reason=req.reason,
                                 actor=req.actor,
                                 gate=req.gate.model_dump(mode="json") if req.gate is not None else None)
        return StageChange(deployment=deployment_info(d), events=self._events_since(name, before))

    def rollback(self, name: str, req: RollbackRequest) -> RollbackResponse:
        """Put the previous champion of ``name`` back at full; the current one is retired.

        Raises:
            NotFoundError: no version of ``name`` stored or deployed (404).
            ConflictError: no previous champion (never one, or all deleted or rolled back from) (409).
        """
        self._known(name)
        target = next((m for m in self.deployments.previous_champions(name) if self._exists(m)), None)
        if target is None:
            raise ConflictError(f"no previous champion of '{name}' to roll back to",
                                details={"name": name})
        previous = self.deployments.get(target)
        assert previous is not None  # it has deployment events, so it has a row
        current = self.deployments.champion(name)
        before = self._last_event_id()
        restored = self.deployments.set(model_id=target, name=name, version=previous.version, stage="full",
                                        action="rollback", reason=req.reason, actor=req.actor)
        retired = self.deployments.get(current.model_id) if current is not None else None
        return RollbackResponse(model_id=restored.model_id, restored=deployment_info(restored),
                                retired=deployment_info(retired) if retired is not None else None,
                                events=self._events_since(name, before))

    # -- lineage and retention ---------------------------------------------------------------

    def lineage(self, model_id: str) -> LineageResponse:
        """``model_id`` and its ancestors, each with its deployment and its events.

        Raises:
            ModelNotFoundError: unknown id (404).
        """
        info: ModelInfo | None = self.registry.get(model_id)
        chain: list[LineageNode] = []
        seen: set[str] = set()
        current_id: str | None = model_id
        while current_id is not None and current_id not in seen and len(chain) < _MAX_CHAIN:
            seen.add(current_id)
            if info is None:
                chain.append(LineageNode(model_id=current_id, missing=True,
                                         events=self.deployments.events(model_id=current_id)))
                break
            d = self.deployments.get(current_id)
            chain.append(LineageNode(model_id=current_id, model=info,
                                     deployment=deployment_info(d) if d is not None else None,
                                     events=self.deployments.events(model_id=current_id)))
            current_id = info.lineage.parent_model_id
            info = self._maybe(current_id) if current_id is not None else None
        return LineageResponse(model_id=model_id, chain=chain)

    def cleanup(self, *, name: str | None = None, dry_run: bool = False) -> CleanupResponse:
        """Apply the retention policy (see :func:`~quantcrew.ml_server.services.retention.cleanup`)."""
        if name is not None and not self.registry.versions(name):
            raise NotFoundError(f"no model named '{name}'", details=[{"loc": ["name"], "msg": "unknown model name"}])
        return retention.cleanup(self.registry, self.deployments, keep_versions=self.keep_versions, name=name,
                                 dry_run=dry_run)

    # -- helpers -----------------------------------------------------------------------------

    def _known(self, name: str) -> list[Deployment]:
        """The name's deployments; a name neither stored nor deployed is a 404 naming it."""
        deployed = self.deployments.list(name)
        if not deployed and not self.registry.versions(name):
            raise NotFoundError(f"no model named '{name}'", details=[{"loc": ["name"], "msg": "unknown model name"}])
        return deployed

    def _exists(self, model_id: str) -> bool:
        return self._maybe(model_id) is not None

    def _maybe(self, model_id: str) -> ModelInfo | None:
        try:
            return self.registry.get(model_id)
        except ModelNotFoundError:
            return None

    def _last_event_id(self) -> int:
        last = self.deployments.events(limit=1)
        return last[-1].id if last else 0

    def _events_since(self, name: str, after: int) -> list[DeploymentEvent]:
        return [e for e in self.deployments.events(name=name, limit=100) if e.id > after]
