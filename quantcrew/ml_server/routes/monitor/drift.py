"""Monitor routes: drift of a model's inputs and output against its training reference, and bar quality.

* ``GET /v1/monitor/drift/{model_id}``: over the model's recent logged predictions
  (``settings.monitor.drift_window`` by default, ``?window=`` to change it);
* ``POST /v1/monitor/drift``: over bars a client sends: the model's features computed from them with
  its family's own code and, where running the model is cheap, its outputs; with the bars'
  data-quality score.

An unknown model id is a 404; a model without a reference (trained before references were stored)
a 409 saying so; a family whose inputs are not bars (supervised, cluster), or whose inputs need
another model's answers (execution), is a 422 on the bars route pointing at the traffic route.
"""

from __future__ import annotations

from fastapi import Query, Response

from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.routes.monitor.shared import monitor_router
from quantcrew.ml_server.routing import ERROR_RESPONSES, model_response
from quantcrew.ml_server.schemas.drift import DriftReport, DriftRequest
from quantcrew.ml_server.services.drift_inputs import bar_inputs
from quantcrew.ml_server.services.monitor import service

router = monitor_router  # routes below are added to the family's one router


@router.get("/drift/{model_id}", response_model=DriftReport, responses=ERROR_RESPONSES)
def drift_of_traffic(model_id: str, server: ServerDep,
                     window: int | None = Query(default=None, ge=1, le=100_000,
                                                description="Recent predictions compared (default "
                                                            "monitor.drift_window).")) -> Response:
    """Drift of a model's recent logged predictions (inputs and output) against its training reference."""
    registry = server.registry
    references = server.references
    predictions = server.predictions
    settings = server.settings
    metrics = server.metrics
    return model_response(service.drift_of_traffic(model_id, registry=registry, references=references,
                                                   predictions=predictions, settings=settings, metrics=metrics,
                                                   window=window))


@router.post("/drift", response_model=DriftReport, responses=ERROR_RESPONSES)
def drift_of_bars(req: DriftRequest, server: ServerDep) -> Response:
    """Drift of a model on new bars (its features from them, its outputs where cheap), with their quality."""
    registry, references, settings, metrics = server.registry, server.references, server.settings, server.metrics
    check_rows(req.data, max_rows=settings.server.max_rows)
    return model_response(service.drift_of_bars(req, registry=registry, references=references, settings=settings,
                                                metrics=metrics, inputs=bar_inputs))
