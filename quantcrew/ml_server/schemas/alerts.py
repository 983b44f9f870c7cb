"""Wire contract of alerts: the alerts the monitor's rules raised, their acknowledgement and resolution, and the
events clients report (a circuit breaker opening). Pydantic only: the agent-side client imports this module.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field, field_validator

from quantcrew.ml_server.schemas.common import FiniteFloat, WireModel

__all__ = [
    "ALERT_STATUSES",
    "AlertAckRequest",
    "AlertEvaluateRequest",
    "AlertEvaluation",
    "AlertEvent",
    "AlertInfo",
    "AlertList",
    "AlertResolveRequest",
    "AlertStatus",
    "ClientEventKind",
    "MonitorEventAccepted",
    "MonitorEventRequest",
    "Severity",
]

Severity = Literal["info", "warning", "critical"]
AlertStatus = Literal["firing", "acknowledged", "resolved"]
ALERT_STATUSES: tuple[AlertStatus, ...] = ("firing", "acknowledged", "resolved")
ClientEventKind = Literal["breaker_open", "breaker_closed"]


class AlertEvent(WireModel):
    """One step in an alert's history."""

    at: datetime = Field(description="When it happened (UTC).")
    kind: str = Field(description="fired, escalated, acknowledged, resolved, reopened, notified or suppressed.")
    detail: dict[str, str | float | int | bool | None] = Field(default_factory=dict)


class AlertInfo(WireModel):
    """An alert: one row per fingerprint (rule and labels) and firing episode, with how often it fired."""

    alert_id: int = Field(description="Id for ack and resolve.")
    fingerprint: str = Field(description="The rule and the labels of the series that fired, hashed.")
    rule: str
    metric: str
    labels: dict[str, str] = Field(description="The series that fired (a route, a model, a client).")
    status: AlertStatus
    severity: Severity = Field(description="Now, after any escalation.")
    initial_severity: Severity = Field(description="The rule's severity.")
    comparison: str
    threshold: FiniteFloat
    value: FiniteFloat | None = Field(description="The metric's value at the last evaluation that saw it firing.")
    samples: int = Field(description="Observations behind that value.")
    count: int = Field(description="Evaluations that found it firing.")
    first_seen: datetime
    last_seen: datetime
    fired_at: datetime
    acknowledged_at: datetime | None = None
    acknowledged_by: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = Field(default=None, description="'auto' when the condition cleared, else who.")
    escalations: int = 0
    message: str = ""
    events: list[AlertEvent] | None = Field(default=None, description="History, newest last (one alert only).")


class AlertList(WireModel):
    """Alerts newest first."""

    alerts: list[AlertInfo]


class AlertAckRequest(WireModel):
    """Acknowledge an alert: it stops escalating and stays listed until it resolves."""

    by: str | None = Field(default=None, max_length=200, description="Who acknowledges it.")
    note: str | None = Field(default=None, max_length=1000)


class AlertResolveRequest(WireModel):
    """Resolve an alert by hand; it fires again (as a new episode) if its condition still holds."""

    by: str | None = Field(default=None, max_length=200, description="Who resolves it.")
    note: str | None = Field(default=None, max_length=1000)


class AlertEvaluateRequest(WireModel):
    """Evaluate the rules now: all of them, or the ones named."""

    rules: list[str] | None = Field(default=None, min_length=1, max_length=1000,
                                    description="Only these rules (by name); default every rule.")


class AlertEvaluation(WireModel):
    """What one evaluation of the rules did."""

    at: datetime
    rules: int = Field(description="Rules evaluated.")
    series: int = Field(description="Labelled series the rules judged.")
    skipped: dict[str, str] = Field(default_factory=dict,
                                    description="Rules not judged this time and why (too few samples, no data, "
                                                "an error reading the metric).")
    pending: int = Field(description="Series whose condition holds but not yet for the rule's 'for'.")
    changed: list[AlertInfo] = Field(description="Alerts fired, escalated or resolved by this evaluation.")
    firing: int = Field(description="Alerts firing or acknowledged after it.")
    elapsed_ms: FiniteFloat


class MonitorEventRequest(WireModel):
    """An event a client reports: its circuit breaker to this server opened (or closed again)."""

    kind: ClientEventKind
    client: str = Field(min_length=1, max_length=200, description="Which client: host and process, or a name.")
    server: str | None = Field(default=None, max_length=500, description="The server URL the client calls.")
    at: datetime | None = Field(default=None, description="When it happened at the client (default: on arrival).")
    failures: int | None = Field(default=None, ge=0, le=1_000_000, description="Consecutive faults that opened it.")
    event_id: str | None = Field(default=None, min_length=1, max_length=64,
                                 description="Client-made id: the same event sent twice is counted once.")
    detail: str | None = Field(default=None, max_length=1000)

    @field_validator("at")
    @classmethod
    def _in_utc(cls, value: datetime | None) -> datetime | None:
        """The time in UTC (a naive time is taken as UTC), between the years 2000 and 2200."""
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        if not datetime(2000, 1, 1, tzinfo=UTC) <= value <= datetime(2200, 1, 1, tzinfo=UTC):
            raise ValueError("must be a time between the years 2000 and 2200")
        return value.astimezone(UTC)


class MonitorEventAccepted(WireModel):
    """The event was recorded (or had been: ``duplicate``)."""

    event_id: str
    duplicate: bool = False
