"""The registry over HTTP: entries, lineage, deployment stages of every stateful family, retention, comparison.

A version is addressed by its ``model_id``; promotion and rollback by the deployment name (a
model name, or ``rl-<agent>-<symbol>`` for an RL policy). Every stage change is recorded
(``GET /v1/models/events``).
"""

from __future__ import annotations

from fastapi import APIRouter, Query, Response

from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.common import ErrorBody, ModelInfo
from quantcrew.ml_server.schemas.lineage import (
    CleanupRequest,
    CleanupResponse,
    CompareRequest,
    CompareResponse,
    DeploymentEvent,
    LineageResponse,
    PromoteRequest,
    RollbackRequest,
    RollbackResponse,
    StageChange,
    StageRequest,
)
from quantcrew.ml_server.services import compare as compare_service

router = APIRouter(prefix="/models", tags=["models"], route_class=ORJSONRoute)


@router.get("")
def list_models(server: ServerDep, family: str | None = Query(default=None, max_length=32),
                name: str | None = Query(default=None, max_length=64)) -> list[ModelInfo]:
    """Every stored model, newest first, optionally of one family or one name."""
    registry = server.registry
    if name is not None:
        return [m for m in registry.versions(name) if family is None or m.family == family]
    return registry.list(family)


@router.get("/events", response_model=list[DeploymentEvent], responses=ERROR_RESPONSES)
def events(server: ServerDep, name: str | None = Query(default=None, max_length=64),
           model_id: str | None = Query(default=None, max_length=64),
           limit: int = Query(default=100, ge=1, le=10_000)) -> Response:
    """Recorded deployment steps (of a deployment name or a version), oldest first, the latest ``limit``."""
    deployments = server.deployments
    found = deployments.events(name=name, model_id=model_id, limit=limit)
    return Response(b"[" + b",".join(e.model_dump_json().encode() for e in found) + b"]",
                    media_type="application/json")


@router.post("/compare", response_model=CompareResponse, responses=ERROR_RESPONSES)
async def compare(req: CompareRequest, server: ServerDep) -> Response:
    """Champion against challenger on the same rows: per-row losses of both and a paired test.

    Ensemble: log loss of P(up) against the next bar's direction on ``data``. Supervised: squared
    error or log loss on ``features`` and ``target``. Regime: minus the one-step predictive
    log-likelihood of each bar's features. RL: minus the net return after costs of the policy's
    position. Execution: minus the return of the position sized for ``signals`` (required). Fewer
    pairs than ``min_samples``: decision ``insufficient``.
    """
    registry, deployments, runtime = server.registry, server.deployments, server.inference
    return model_response(await compare_service.compare(req, registry, deployments, runtime))


@router.post("/cleanup", response_model=CleanupResponse, responses=ERROR_RESPONSES)
def cleanup(req: CleanupRequest, server: ServerDep) -> Response:
    """Apply the retention policy: keep the newest ``monitor.keep_versions`` versions per name, and every
    version deployed (not retired), the rollback target, or used by a kept version."""
    lifecycle = server.lifecycle
    return model_response(lifecycle.cleanup(name=req.name, dry_run=req.dry_run))


@router.get("/{model_id}", responses={404: {"model": ErrorBody}})
def get_model(model_id: str, server: ServerDep) -> ModelInfo:
    """One stored model's entry: version, method, SHA-256, metadata, lineage."""
    registry = server.registry
    return registry.get(model_id)


@router.get("/{model_id}/lineage", response_model=LineageResponse, responses=ERROR_RESPONSES)
def lineage(model_id: str, server: ServerDep) -> Response:
    """The version and its parents, each with its lineage fields, deployment and deployment history."""
    lifecycle = server.lifecycle
    return model_response(lifecycle.lineage(model_id))


@router.post("/{model_id}/stage", response_model=StageChange, responses=ERROR_RESPONSES)
def set_stage(model_id: str, req: StageRequest, server: ServerDep) -> Response:
    """Put a stored version of any stateful family at a stage: shadow, canary, gradual, full or retired."""
    lifecycle = server.lifecycle
    return model_response(lifecycle.stage(model_id, req))


@router.post("/{name}/promote", response_model=StageChange, responses=ERROR_RESPONSES)
def promote(name: str, req: PromoteRequest, server: ServerDep) -> Response:
    """Promote the name's candidate one step (shadow -> canary -> full, gradual -> full) or to ``to_stage``.

    409 when there is nothing to promote, or the gate sent failed (unless ``force``).
    """
    lifecycle = server.lifecycle
    return model_response(lifecycle.promote(name, req))


@router.post("/{name}/rollback", response_model=RollbackResponse, responses=ERROR_RESPONSES)
def rollback(name: str, req: RollbackRequest, server: ServerDep) -> Response:
    """Put the previous champion back at full; the current one is retired. 409 without a previous champion.

    Every rollback raises a ``model_rolled_back`` alert (warning) naming both versions and the reason.
    """
    lifecycle, alerts = server.lifecycle, server.alerts
    done = lifecycle.rollback(name, req)
    retired = done.retired.model_id if done.retired is not None else "none"
    why = req.reason or "no reason given"
    alerts.raise_alert("model_rolled_back", severity="warning", labels={"name": name},
                       message=f"'{name}' rolled back from {retired} to {done.model_id}: {why}")
    return model_response(done)
