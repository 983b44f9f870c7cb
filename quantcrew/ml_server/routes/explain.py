"""Explain family: permutation importance, a global surrogate with its fidelity, local explanations.

One pair of routes serves every explainable family (ensemble, supervised, rl): the request
names the model (``model_id``, or ``symbol`` for the ensemble deployed for it) and sends the
inputs that family reads. The work runs in a worker thread; an ensemble's forward passes run
on the app's device thread.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from quantcrew.config.settings import Settings
from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.limits import check_matrix, check_rows
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.explain import (
    ExplainGlobalRequest,
    ExplainGlobalResponse,
    ExplainLocalRequest,
    ExplainLocalResponse,
    ExplainRequestBase,
)
from quantcrew.ml_server.services.explain import service

router = APIRouter(prefix="/explain", tags=["explain"], route_class=ORJSONRoute)


def _check_size(req: ExplainRequestBase, settings: Settings) -> None:
    if req.data is not None:
        check_rows(req.data, max_rows=settings.server.max_rows)
    if req.features is not None:
        check_matrix(req.features, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns,
                     field="features")


@router.post("/global", response_model=ExplainGlobalResponse, responses=ERROR_RESPONSES)
async def explain_global(req: ExplainGlobalRequest, server: ServerDep) -> Response:
    """Which features move a stored model's output over the last ``rows`` rows, and a tree that mimics it.

    Permutation importance of the output (or mean absolute SHAP values with ``method: "shap"``)
    and a shallow surrogate tree fitted to the output, with its fidelity on the last rows.
    """
    settings, registry, deployments, runtime = server.settings, server.registry, server.deployments, server.inference
    _check_size(req, settings)
    return model_response(await service.explain_global(req, registry, deployments, runtime))


@router.post("/local", response_model=ExplainLocalResponse, responses=ERROR_RESPONSES)
async def explain_local(req: ExplainLocalRequest, server: ServerDep) -> Response:
    """What each feature's value did to one prediction (the last bar or row, or ``row``).

    Each feature is moved by +-k robust std and set to its median over the reference rows
    (or SHAP values with ``method: "shap"``); features are ranked by the size of their effect.
    """
    settings, registry, deployments, runtime = server.settings, server.registry, server.deployments, server.inference
    _check_size(req, settings)
    return model_response(await service.explain_local(req, registry, deployments, runtime))
