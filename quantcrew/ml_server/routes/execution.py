"""Execution family: order size and timing with MC-dropout uncertainty, sampled in one batched pass."""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.execution import ExecutionRequest, ExecutionResponse
from quantcrew.ml_server.services.execution import service

router = APIRouter(prefix="/execution", tags=["execution"], route_class=ORJSONRoute)


@router.post("/plan", response_model=ExecutionResponse, responses=ERROR_RESPONSES)
async def plan(req: ExecutionRequest, server: ServerDep) -> Response:
    """Size (fraction of the maximum position) and timing (now / wait) per decision, with MC-dropout intervals.

    The network pinned by ``model_id``, else the symbol's deployed one; 409 ``model_gated`` when
    the symbol's networks were trained and none passed its quality gate. The same inputs get the
    same plan (the dropout masks are seeded from them when no ``seed`` is given).
    """
    settings = server.settings
    registry = server.registry
    deployments = server.deployments
    runtime = server.inference
    predictions = server.predictions
    if req.data is not None:
        check_rows(req.data, max_rows=settings.server.max_rows)
    return model_response(await service.plan(req, registry, deployments, runtime, predictions))
