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

from typing import Any

import numpy as np
from fastapi import APIRouter, Query, Response

from quantcrew.ml_server.deps import MetricsDep, PredictionLogDep, ReferencesDep, RegistryDep, SettingsDep
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.drift import (
    BarQualityCheck,
    BarQualityInfo,
    DriftReport,
    DriftRequest,
    SeriesDriftInfo,
)
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import Bars, bars_from_payload
from quantcrew.ml_server.services.monitor.bar_quality import BarQuality, Check, bar_quality
from quantcrew.ml_server.services.monitor.drift import (
    DriftMonitor,
    DriftRule,
    SeriesDrift,
    drift_report,
    no_reference,
)
from quantcrew.ml_server.services.monitor.drift import DriftReport as Report
from quantcrew.ml_server.services.monitor.reference import FloatArray

router = APIRouter(route_class=ORJSONRoute)

BAR_FAMILIES = ("regime", "anomaly", "ensemble", "rl")
"""Families whose drift can be computed from bars."""


@router.get("/drift/{model_id}", response_model=DriftReport, responses=ERROR_RESPONSES)
def drift_of_traffic(model_id: str, registry: RegistryDep, references: ReferencesDep,
                     predictions: PredictionLogDep, settings: SettingsDep, metrics: MetricsDep,
                     window: int | None = Query(default=None, ge=1, le=100_000,
                                                description="Recent predictions compared (default "
                                                            "monitor.drift_window).")) -> Response:
    """Drift of a model's recent logged predictions (inputs and output) against its training reference."""
    info = registry.get(model_id)  # 404 for an unknown id
    report = DriftMonitor(references, predictions, settings.monitor).report(model_id, window)
    _gauges(metrics, report)
    return model_response(_wire(report, info.version, settings.monitor.min_samples))


@router.post("/drift", response_model=DriftReport, responses=ERROR_RESPONSES)
def drift_of_bars(req: DriftRequest, registry: RegistryDep, references: ReferencesDep, settings: SettingsDep,
                  metrics: MetricsDep) -> Response:
    """Drift of a model on new bars (its features from them, its outputs where cheap), with their quality."""
    check_rows(req.data, max_rows=settings.server.max_rows)
    info = registry.get(req.model_id)
    reference = references.get(req.model_id)
    if reference is None:
        raise no_reference(req.model_id)
    bars = bars_from_payload(req.data, min_rows=2)
    quality = bar_quality(bars.times, bars.open, bars.high, bars.low, bars.close, bars.iso(),
                          max_gap_days=settings.data.max_gap_days)
    names, matrix, outputs = bar_inputs(registry, info.family, req.model_id, bars, outputs=req.include_outputs)
    if req.window is not None:
        matrix = matrix[-req.window:]
        outputs = None if outputs is None else outputs[-req.window:]
    features = {name: matrix[:, j] for j, name in enumerate(names)}
    report = drift_report(reference, features, outputs, DriftRule.from_settings(settings.monitor), source="bars")
    references.put_quality(req.model_id, quality.score, quality.n_bars)
    metrics.bar_quality_score.labels(req.model_id).set(quality.score)
    _gauges(metrics, report)
    return model_response(_wire(report, info.version, settings.monitor.min_samples, quality))


def bar_inputs(registry: ModelRegistry, family: str, model_id: str, bars: Bars, *,
               outputs: bool) -> tuple[tuple[str, ...], FloatArray, FloatArray | None]:
    """A stored model's feature rows on ``bars`` (the names and values its prediction log records) and, where
    cheap and asked for, its output scalar on them.

    Raises:
        InvalidInputError: a family whose drift cannot be computed from bars (naming ``model_id``).
    """
    if family == "regime":
        from quantcrew.ml_server.services.regime.model import RegimeDetector
        from quantcrew.ml_server.services.regime.service import drift_inputs as regime_inputs

        detector, _ = adapter.rebuild(registry, model_id, RegimeDetector)
        names, matrix, out = regime_inputs(detector, bars)
        return names, matrix, out if outputs else None
    if family == "anomaly":
        from quantcrew.ml_server.services.anomaly.model import AnomalyDetector
        from quantcrew.ml_server.services.anomaly.service import drift_inputs as anomaly_inputs

        anomaly, _ = adapter.rebuild(registry, model_id, AnomalyDetector)
        names, matrix, out = anomaly_inputs(anomaly, bars)
        return names, matrix, out if outputs else None
    if family == "ensemble":
        from quantcrew.ml_server.services.ensemble.features import FEATURE_NAMES, WARMUP, build_features

        # the unscaled feature rows after the warm-up (inputs only: the networks run on the device thread, and
        # their outputs on real requests are in the traffic report)
        table = build_features(bars.open, bars.high, bars.low, bars.close, bars.volume)[WARMUP:]
        return tuple(FEATURE_NAMES), table, None
    if family == "rl":
        from quantcrew.ml_server.services.rl.evaluation import run_policy
        from quantcrew.ml_server.services.rl.service import load_policy, policy_market

        policy, info = load_policy(registry, model_id)
        market = policy_market(registry, bars, info.metadata, {})
        rows = np.asarray(market.scaled[market.warmup:], dtype=np.float64)
        positions = run_policy(policy, market, market.warmup, len(bars)) if outputs else None
        return tuple(market.feature_names), rows, positions
    message = (f"drift of a {family} model cannot be computed from bars: "
               + ("its inputs are a feature table" if family in ("supervised", "cluster")
                  else "its inputs include another model's answers")
               + f"; read GET /v1/monitor/drift/{model_id} (its recent traffic) instead")
    raise InvalidInputError(message, details=[{"loc": ["model_id"], "msg": f"a {family} model"}])


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
