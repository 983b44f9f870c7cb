"""The monitor family's verbs: outcomes, the prediction log, live quality, drift, alerts and client events.

Each verb takes the stores and settings it reads and a wire request, and returns a wire reply; the
nouns do the work (:mod:`.outcomes`, :mod:`.predictions`, :mod:`.quality`, :mod:`.drift`,
:mod:`.bar_quality`, :mod:`.alerts`). Drift on bars needs each family's own feature code: the
caller hands it in as a :class:`BarInputs` (the families log their predictions through this package,
so it imports none of them).
"""

from __future__ import annotations

from typing import Any, Protocol

from quantcrew.config.settings import Settings
from quantcrew.ml_server.errors import ModelNotFoundError
from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.registry import ModelRegistry
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
from quantcrew.ml_server.schemas.drift import (
    BarQualityCheck,
    BarQualityInfo,
    DriftReport,
    DriftRequest,
    SeriesDriftInfo,
)
from quantcrew.ml_server.schemas.monitor import (
    ModelQuality,
    OutcomeBatch,
    OutcomeList,
    OutcomesAccepted,
    PredictionInfo,
    PredictionList,
)
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.monitor.alerts import Alerts
from quantcrew.ml_server.services.monitor.bar_quality import BarQuality, Check, bar_quality
from quantcrew.ml_server.services.monitor.drift import DriftMonitor, DriftRule, SeriesDrift, drift_report, no_reference
from quantcrew.ml_server.services.monitor.drift import DriftReport as Report
from quantcrew.ml_server.services.monitor.outcomes import OutcomeStore, outcome_info
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.monitor.quality import LiveQuality
from quantcrew.ml_server.services.monitor.reference import FloatArray, ReferenceStore

__all__ = [
    "BarInputs",
    "acknowledge",
    "drift_of_bars",
    "drift_of_traffic",
    "evaluate",
    "get_alert",
    "list_alerts",
    "list_outcomes",
    "list_predictions",
    "model_quality",
    "quality_info",
    "record_outcomes",
    "report_event",
    "resolve",
]

FLUSH_TIMEOUT_S = 5.0
"""How long reading the prediction log waits for what is still queued to be written."""


class BarInputs(Protocol):
    """A stored model's feature rows on bars (names and values, as its prediction log records them) and, where
    cheap and ``outputs`` is asked, its output scalar on them; a family whose drift cannot be computed from bars
    raises ``InvalidInputError`` naming ``model_id``."""

    def __call__(self, registry: ModelRegistry, family: str, model_id: str, bars: Bars, *,
                 outputs: bool) -> tuple[tuple[str, ...], FloatArray, FloatArray | None]: ...


# -- outcomes and the prediction log ---------------------------------------------------------------

def record_outcomes(outcomes: OutcomeStore, req: OutcomeBatch) -> OutcomesAccepted:
    """Record a batch of outcomes (idempotent per ``outcome_id``; a changed value is a 409 and writes nothing)."""
    inserted, known = outcomes.add(req.outcomes)
    return OutcomesAccepted(inserted=inserted, known=known)


def list_outcomes(outcomes: OutcomeStore, *, subject: str | None, limit: int) -> OutcomeList:
    """The newest ``limit`` outcomes (of ``subject`` when given), newest first."""
    return OutcomeList(outcomes=[outcome_info(o) for o in outcomes.recent(limit, subject)])


def list_predictions(log: PredictionLog, model_id: str, *, limit: int) -> PredictionList:
    """The newest ``limit`` logged predictions of ``model_id``, newest first (what is queued is written first)."""
    log.flush(timeout=FLUSH_TIMEOUT_S)
    rows = log.recent(model_id, limit)
    return PredictionList(predictions=[PredictionInfo(
        id=r.id, at=r.at, model_id=r.model_id, name=r.name, version=r.version, family=r.family, route=r.route,
        request_hash=r.request_hash, subject=r.subject, as_of=r.as_of, features=r.features, output=r.output,
        label=r.label, confidence=r.confidence, shadow=r.shadow) for r in rows])


def model_quality(quality: LiveQuality, registry: ModelRegistry, model_id: str,
                  log: PredictionLog | None = None) -> ModelQuality:
    """Live quality of one model version, computed now: known to the prediction log, or else to the registry (no
    samples yet). Predictions still queued in ``log`` are written first, so an answer asked for just after a
    prediction and its outcome counts both.

    Raises:
        ModelNotFoundError: ``model_id`` is in neither (404).
    """
    if log is not None:
        log.flush(timeout=5.0)
    logged = quality.resolve(model_id)
    if logged is not None and logged[0] == model_id:
        return quality.report(model_id, cached=False)
    try:
        info = registry.get(model_id)
    except ModelNotFoundError:
        raise ModelNotFoundError(f"no model '{model_id}' in the registry or the prediction log",
                                 details={"model_id": model_id}) from None
    return quality.report(model_id, name=info.name, version=info.version, family=info.family, cached=False)


# -- drift -----------------------------------------------------------------------------------------

def drift_of_traffic(model_id: str, *, registry: ModelRegistry, references: ReferenceStore,
                     predictions: PredictionLog, settings: Settings, metrics: Metrics,
                     window: int | None = None) -> DriftReport:
    """Drift of a model's last ``window`` logged predictions (default ``monitor.drift_window``) against its
    training reference; the drift gauges are set.

    Raises:
        ModelNotFoundError: an unknown ``model_id`` (404).
        ConflictError: the model has no reference (409).
    """
    info = registry.get(model_id)
    report = DriftMonitor(references, predictions, settings.monitor).report(model_id, window)
    _gauges(metrics, report)
    return _wire(report, info.version, settings.monitor.min_samples)


def drift_of_bars(req: DriftRequest, *, registry: ModelRegistry, references: ReferenceStore, settings: Settings,
                  metrics: Metrics, inputs: BarInputs) -> DriftReport:
    """Drift of a model on the request's bars (its features from them by ``inputs``, its outputs where cheap),
    with the bars' quality score (kept for the model, and set as a gauge with the drift gauges).

    Raises:
        ModelNotFoundError: an unknown model id (404).
        ConflictError: the model has no reference (409).
        InvalidInputError: bars that cannot be read, or a family whose drift is not computed from bars (422).
    """
    info = registry.get(req.model_id)
    reference = references.get(req.model_id)
    if reference is None:
        raise no_reference(req.model_id)
    bars = bars_from_payload(req.data, min_rows=2)
    quality = bar_quality(bars.times, bars.open, bars.high, bars.low, bars.close, bars.iso(),
                          max_gap_days=settings.data.max_gap_days)
    names, matrix, outputs = inputs(registry, info.family, req.model_id, bars, outputs=req.include_outputs)
    if req.window is not None:
        matrix = matrix[-req.window:]
        outputs = None if outputs is None else outputs[-req.window:]
    features = {name: matrix[:, j] for j, name in enumerate(names)}
    report = drift_report(reference, features, outputs, DriftRule.from_settings(settings.monitor), source="bars")
    references.put_quality(req.model_id, quality.score, quality.n_bars)
    metrics.bar_quality_score.labels(req.model_id).set(quality.score)
    _gauges(metrics, report)
    return _wire(report, info.version, settings.monitor.min_samples, quality)


def _gauges(metrics: Metrics, report: Report) -> None:
    if report.psi_max is not None:
        metrics.drift_psi_max.labels(report.model_id).set(report.psi_max)
    if report.ks_p_min is not None:
        metrics.drift_ks_pvalue_min.labels(report.model_id).set(report.ks_p_min)
    if report.judged:
        metrics.drift_detected.labels(report.model_id).set(1.0 if report.drifted else 0.0)


def _series(s: SeriesDrift) -> SeriesDriftInfo:
    return SeriesDriftInfo(name=s.name, n=s.n, psi=s.psi, ks_statistic=s.ks_statistic, ks_pvalue=s.ks_p,
                           n_effective=s.n_effective, ks_pvalue_adjusted=s.ks_p_adjusted, drifted=s.drifted,
                           judged=s.judged)


def _check(c: Check) -> BarQualityCheck:
    return BarQualityCheck(count=c.count, first=list(c.first))


def quality_info(q: BarQuality) -> BarQualityInfo:
    """The wire form of a bar-quality score."""
    return BarQualityInfo(score=q.score, n_bars=q.n_bars, clean_bars=q.clean_bars, gaps=_check(q.gaps),
                          missing_business_days=_check(q.missing_business_days),
                          charged_missing_days=q.charged_missing_days, stale=_check(q.stale),
                          zero_range=_check(q.zero_range), outliers=_check(q.outliers),
                          inconsistent=_check(q.inconsistent), max_gap_days=q.max_gap_days, outlier_z=q.outlier_z)


def _wire(report: Report, version: int, min_samples: int, quality: BarQuality | None = None) -> DriftReport:
    source: Any = report.source
    return DriftReport(
        model_id=report.model_id, model_version=version, family=report.family, source=source, n=report.n,
        drifted=report.drifted, judged=report.judged, psi_max=report.psi_max, ks_pvalue_min=report.ks_p_min,
        drifted_features=list(report.drifted_features), missing_features=list(report.missing_features),
        features=[_series(s) for s in report.features],
        output=_series(report.output) if report.output is not None else None, rule=report.rule,
        min_samples=min_samples, quality=quality_info(quality) if quality is not None else None)


# -- alerts and events -----------------------------------------------------------------------------

def list_alerts(alerts: Alerts, *, status: AlertStatus | None = None, severity: Severity | None = None,
                rule: str | None = None, limit: int = 100) -> AlertList:
    """Alerts newest first (one per fingerprint and firing episode, with its count), filtered as asked."""
    return alerts.list(status=status, severity=severity, rule=rule, limit=limit)


def evaluate(alerts: Alerts, req: AlertEvaluateRequest | None = None) -> AlertEvaluation:
    """Evaluate the rules now: every rule, or those the request names (an unknown name is a 422)."""
    return alerts.evaluate(rules=req.rules if req is not None else None)


def get_alert(alerts: Alerts, alert_id: int) -> AlertInfo:
    """One alert with its history; an unknown id is a 404."""
    return alerts.get(alert_id)


def acknowledge(alerts: Alerts, alert_id: int, req: AlertAckRequest | None = None) -> AlertInfo:
    """Acknowledge an alert (it stops escalating); a resolved one is a 409, an unknown id a 404."""
    req = req or AlertAckRequest()
    return alerts.acknowledge(alert_id, by=req.by, note=req.note)


def resolve(alerts: Alerts, alert_id: int, req: AlertResolveRequest | None = None) -> AlertInfo:
    """Resolve an alert by hand (again: no change); it fires anew if its condition still holds."""
    req = req or AlertResolveRequest()
    return alerts.resolve(alert_id, by=req.by, note=req.note)


def report_event(alerts: Alerts, req: MonitorEventRequest) -> MonitorEventAccepted:
    """Count a client event (a circuit breaker opening) once per ``event_id``."""
    return alerts.record_event(req)
