"""Monitor routes: alerts fired by the rules (list, one with its history, acknowledge, resolve, evaluate now), and
the events clients report (a circuit breaker opening)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body, Path, Query, Response

from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.routes.monitor.shared import monitor_router
from quantcrew.ml_server.routing import ERROR_RESPONSES, model_response
from quantcrew.ml_server.schemas.alerts import (
    AlertAckRequest,
    AlertEvaluateRequest,
    AlertEvaluation,
    AlertInfo,
    AlertList,
    AlertResolveRequest,
    AlertStatus,
    MonitorEventAccepted,
    MonitorEventRequest,
    Severity,
)
from quantcrew.ml_server.services.monitor import service

router = monitor_router  # routes below are added to the family's one router

AlertIdPath = Annotated[int, Path(ge=1, le=2**62, description="The alert's id (from the list).")]


@router.get("/alerts", response_model=AlertList, responses=ERROR_RESPONSES)
def list_alerts(
    server: ServerDep,
    status: Annotated[AlertStatus | None, Query(description="Only alerts in this status.")] = None,
    severity: Annotated[Severity | None, Query(description="Only alerts of this severity.")] = None,
    rule: Annotated[str | None, Query(max_length=100, description="Only alerts of this rule.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most alerts to return.")] = 100,
) -> Response:
    """Alerts newest first: one per fingerprint (rule and labels) and firing episode, with its count."""
    alerts = server.alerts
    return model_response(service.list_alerts(alerts, status=status, severity=severity, rule=rule, limit=limit))


@router.post("/alerts/evaluate", response_model=AlertEvaluation, responses=ERROR_RESPONSES)
def evaluate_alerts(server: ServerDep, req: Annotated[AlertEvaluateRequest | None, Body()] = None) -> Response:
    """Evaluate the rules now (every rule, or those named; the server also evaluates every rule each
    ``monitor.alert_interval_s``). An unknown rule name is a 422."""
    alerts = server.alerts
    return model_response(service.evaluate(alerts, req))


@router.get("/alerts/{alert_id}", response_model=AlertInfo, responses=ERROR_RESPONSES)
def get_alert(alert_id: AlertIdPath, server: ServerDep) -> Response:
    """One alert with its history (fired, notified, escalated, acknowledged, resolved); an unknown id is a 404."""
    alerts = server.alerts
    return model_response(service.get_alert(alerts, alert_id))


@router.post("/alerts/{alert_id}/ack", response_model=AlertInfo, responses=ERROR_RESPONSES)
def acknowledge_alert(alert_id: AlertIdPath, server: ServerDep,
                      req: Annotated[AlertAckRequest | None, Body()] = None) -> Response:
    """Acknowledge an alert: it stops escalating; a resolved one is a 409, an unknown id a 404."""
    alerts = server.alerts
    return model_response(service.acknowledge(alerts, alert_id, req))


@router.post("/alerts/{alert_id}/resolve", response_model=AlertInfo, responses=ERROR_RESPONSES)
def resolve_alert(alert_id: AlertIdPath, server: ServerDep,
                  req: Annotated[AlertResolveRequest | None, Body()] = None) -> Response:
    """Resolve an alert by hand (again: no change); it fires anew if its condition still holds."""
    alerts = server.alerts
    return model_response(service.resolve(alerts, alert_id, req))


@router.post("/events", response_model=MonitorEventAccepted, status_code=202, responses=ERROR_RESPONSES)
def report_event(req: MonitorEventRequest, server: ServerDep) -> Response:
    """Report a client event (its circuit breaker to this server opened); counted once per ``event_id``, read by
    the ``breaker.trips`` metric of the alert rules."""
    alerts = server.alerts
    return model_response(service.report_event(alerts, req), status_code=202)
