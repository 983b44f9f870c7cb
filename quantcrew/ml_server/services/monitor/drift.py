"""Drift of a model's inputs and output against its training reference: PSI and the two-sample KS test.

For each feature of the reference (and for the output scalar), over a window of new values
(recent logged predictions, or features computed from bars a client sends):

* PSI, the population stability index, on the reference's quantile bins:
  ``sum_i (q_i - p_i) * ln(q_i / p_i)``, ``p`` the training shares, ``q`` the window's, each
  share floored at :data:`PSI_FLOOR` (an empty bin would make it infinite). Every term is >= 0
  (``q - p`` and ``ln(q / p)`` share their sign), so PSI >= 0, 0 when the shares match, and the
  same with ``p`` and ``q`` swapped.
* the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``) of the window against the
  reference's sample: its statistic and p-value.

Decision rule (:func:`judge`), chosen to keep false alarms near zero over many evaluations:

* nothing is judged below ``min_samples`` values (``settings.monitor.min_samples``), nor below
  :data:`MIN_EFFECTIVE` effective values (see below);
* a series (one feature, or the output) is drifted when BOTH its PSI is above ``drift_psi``
  (0.25, the usual "significant shift" level: an effect size) AND its KS p-value is below
  ``drift_alpha / m`` (Bonferroni over the ``m`` series compared: a family-wise level over one
  report). The KS test alone fires on tiny shifts with many samples; PSI alone is noisy on
  small windows. Requiring both keeps each one's false alarms out;
* the KS p-value judged is taken at the window's EFFECTIVE sample size (:func:`effective_size`:
  ``n (1 - r) / (1 + r)`` with ``r`` the window's lag-1 autocorrelation), never below scipy's
  own: overlapping features (a 20-bar return, a rolling volatility) and sticky outputs (a
  regime label) repeat themselves from row to row, and the test at ``n`` rows would take a
  window of one slow swing for a new law. Both p-values are reported;
* the model is drifted when at least one series is.

The window's values come from :class:`PredictionSource` (the prediction log) or from an array
a route computed; :class:`DriftMonitor` puts the reference store and the log together and gives
the alerts engine one plain function, :func:`drift_value` (``psi_max``, ``ks_pvalue_min``,
``output_psi``, ``drifted_share``, ``drifted_features``, ``drifted``, ``data_quality``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import stats

from quantcrew.config.settings import MonitorSettings
from quantcrew.ml_server.errors import ConflictError, InvalidInputError
from quantcrew.ml_server.services.monitor.reference import (
    OUTPUT,
    DriftReference,
    ReferenceStore,
    Summary,
    bin_index,
)

__all__ = [
    "METRICS",
    "MIN_EFFECTIVE",
    "PSI_FLOOR",
    "DriftMonitor",
    "DriftReport",
    "DriftRule",
    "SeriesDrift",
    "drift_report",
    "drift_value",
    "effective_size",
    "judge",
    "ks_pvalue",
    "ks_test",
    "no_reference",
    "psi",
    "window_from_records",
]

FloatArray = npt.NDArray[np.float64]

PSI_FLOOR = 1e-4
"""Smallest share a bin counts with in PSI (an empty bin would make the log infinite)."""

MIN_EFFECTIVE = 10.0
"""Fewest effective values (:func:`effective_size`) a series needs to be judged."""

METRICS: tuple[str, ...] = ("psi_max", "ks_pvalue_min", "output_psi", "drifted_share", "drifted_features",
                            "drifted", "data_quality")
"""What :meth:`DriftMonitor.value` answers."""


def psi(expected: Sequence[float] | FloatArray, actual: Sequence[float] | FloatArray, *,
        floor: float = PSI_FLOOR) -> float:
    """Population stability index between two share vectors over the same bins (>= 0).

    Args:
        expected: Reference shares per bin.
        actual: New shares per bin (same length).
        floor: Each share is raised to at least this before the log.
    """
    p = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    q = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    if p.shape != q.shape:
        raise ValueError(f"share vectors differ in length: {p.shape} vs {q.shape}")
    return float(max(0.0, np.sum((q - p) * np.log(q / p))))


def shares(summary: Summary, values: FloatArray) -> FloatArray:
    """The share of ``values`` in each of the reference's bins."""
    counts = np.bincount(bin_index(summary.edges, values), minlength=len(summary.proportions))
    return np.asarray(counts / max(1, len(values)), dtype=np.float64)


def ks_test(reference: Sequence[float] | FloatArray, values: Sequence[float] | FloatArray) -> tuple[float, float]:
    """The two-sample KS statistic and p-value of ``values`` against ``reference`` (scipy)."""
    result = stats.ks_2samp(np.asarray(reference, dtype=np.float64), np.asarray(values, dtype=np.float64))
    return float(result.statistic), float(result.pvalue)


@dataclass(frozen=True)
class DriftRule:
    """The decision rule's settings (see the module docstring)."""

    psi: float = 0.25
    alpha: float = 0.01
    min_samples: int = 30
    autocorrelation: bool = True
    """Judge the KS test at the window's effective sample size (see :func:`effective_size`)."""

    @classmethod
    def from_settings(cls, monitor: MonitorSettings) -> DriftRule:
        return cls(psi=monitor.drift_psi, alpha=monitor.drift_alpha, min_samples=monitor.min_samples)

    def describe(self, series: int) -> str:
        level = self.alpha / max(1, series)
        size = " at the window's effective sample size (lag-1 autocorrelation)" if self.autocorrelation else ""
        least = f"{self.min_samples} values" + (f" ({MIN_EFFECTIVE:g} effective)" if self.autocorrelation else "")
        return (f"drifted when PSI > {self.psi:g} and KS p{size} < {self.alpha:g}/{series} = {level:.3g} "
                f"(Bonferroni over {series} series), with at least {least}; the model is drifted when any "
                "series is")


@dataclass(frozen=True)
class SeriesDrift:
    """Drift of one feature (or of the output)."""

    name: str
    n: int
    psi: float | None
    ks_statistic: float | None
    ks_p: float | None
    drifted: bool
    judged: bool
    n_effective: float | None = None
    ks_p_adjusted: float | None = None


@dataclass(frozen=True)
class DriftReport:
    """A model's drift over one window."""

    model_id: str
    family: str
    source: str
    n: int
    features: list[SeriesDrift]
    output: SeriesDrift | None
    drifted: bool
    judged: bool
    psi_max: float | None
    ks_p_min: float | None
    drifted_features: list[str]
    missing_features: list[str]
    rule: str
    extra: dict[str, Any] = field(default_factory=dict)


def effective_size(values: FloatArray) -> float:
    """The sample size ``values`` is worth once their lag-1 autocorrelation is counted: ``n (1 - r) / (1 + r)``
    for a positive correlation ``r`` (an AR(1) process's variance inflation; ``r`` corrected for the
    estimate's downward bias on short windows), ``n`` otherwise; at least 2.

    Overlapping features (a 20-bar return, a rolling volatility) and sticky outputs (a regime label) repeat
    themselves from one row to the next, so a window of them holds far fewer independent values than rows.
    """
    n = len(values)
    if n < 3:
        return float(n)
    centred = values - values.mean()
    denominator = float(np.dot(centred, centred))
    if denominator <= 0.0:
        return float(n)
    r = float(np.dot(centred[1:], centred[:-1])) / denominator
    if r <= 0.0:
        return float(n)
    r = min(0.999, r + (1.0 + 3.0 * r) / n)  # the estimate's small-sample bias, E[r] ~ rho - (1 + 3 rho) / n
    return float(max(2.0, min(n, n * (1.0 - r) / (1.0 + r))))


def ks_pvalue(statistic: float, n_reference: int, n_effective: float) -> float:
    """The asymptotic two-sample KS p-value of ``statistic`` for samples of ``n_reference`` and ``n_effective``
    values (scipy's own asymptotic form: ``kstwo`` at ``n m / (n + m)``)."""
    en = n_reference * n_effective / (n_reference + n_effective)
    return float(min(1.0, max(0.0, stats.kstwo.sf(statistic, max(1, round(en))))))


def _series(name: str, summary: Summary, values: FloatArray, rule: DriftRule, level: float) -> SeriesDrift:
    x = values[np.isfinite(values)]
    if len(x) == 0:
        return SeriesDrift(name=name, n=0, psi=None, ks_statistic=None, ks_p=None, drifted=False, judged=False)
    value = psi(summary.proportions, shares(summary, x))
    statistic, p = ks_test(summary.sample, x)
    n_eff = effective_size(x)
    p_adjusted = p if n_eff >= len(x) else max(p, ks_pvalue(statistic, len(summary.sample), n_eff))
    # a window of very sticky values holds too few independent ones to tell a new law from one slow swing
    judged = len(x) >= rule.min_samples and (n_eff >= MIN_EFFECTIVE or not rule.autocorrelation)
    verdict_p = p_adjusted if rule.autocorrelation else p
    return SeriesDrift(name=name, n=len(x), psi=value, ks_statistic=statistic, ks_p=p, judged=judged,
                       drifted=judge(value, verdict_p, level=level, psi_threshold=rule.psi) and judged,
                       n_effective=n_eff, ks_p_adjusted=p_adjusted)


def judge(psi_value: float, ks_p: float, *, level: float, psi_threshold: float) -> bool:
    """One series' verdict: PSI above its threshold AND the KS p-value below the (corrected) level."""
    return psi_value > psi_threshold and ks_p < level


def drift_report(reference: DriftReference, features: Mapping[str, FloatArray | Sequence[float]],
                 outputs: FloatArray | Sequence[float] | None, rule: DriftRule, *, source: str) -> DriftReport:
    """Compare a window of values with ``reference``.

    Args:
        reference: The model's training reference.
        features: New values per feature name (missing names are listed, not judged).
        outputs: New output values (None: not compared).
        rule: The decision rule.
        source: ``"traffic"`` or ``"bars"`` (recorded in the report).
    """
    compared = [n for n in reference.features if n in features]
    with_output = reference.output is not None and outputs is not None
    m = len(compared) + (1 if with_output else 0)
    level = rule.alpha / max(1, m)
    rows = [_series(n, reference.features[n], np.asarray(features[n], dtype=np.float64), rule, level)
            for n in compared]
    out = None
    if with_output:
        assert reference.output is not None and outputs is not None
        out = _series(OUTPUT, reference.output, np.asarray(outputs, dtype=np.float64), rule, level)
    every = [*rows, *([out] if out is not None else [])]
    psis = [s.psi for s in every if s.psi is not None]
    ps = [s.ks_p for s in every if s.ks_p is not None]
    return DriftReport(
        model_id=reference.model_id, family=reference.family, source=source,
        n=max((s.n for s in every), default=0), features=rows, output=out,
        drifted=any(s.drifted for s in every), judged=any(s.judged for s in every),
        psi_max=max(psis) if psis else None, ks_p_min=min(ps) if ps else None,
        drifted_features=[s.name for s in every if s.drifted],
        missing_features=[n for n in reference.features if n not in features],
        rule=rule.describe(m))


class PredictionRecordLike(Protocol):
    """What a drift window reads from a logged prediction."""

    @property
    def features(self) -> Mapping[str, float]: ...

    @property
    def output(self) -> float | None: ...


class PredictionSource(Protocol):
    """The prediction log, as drift reads it."""

    def recent(self, model_id: str, limit: int) -> Sequence[Any]: ...


def window_from_records(records: Sequence[PredictionRecordLike]) -> tuple[dict[str, FloatArray], FloatArray]:
    """Per-feature values and outputs of logged predictions (a missing value counts as NaN, left out)."""
    names: dict[str, None] = {}
    for r in records:
        names.update(dict.fromkeys(r.features))
    features = {n: np.array([_num(r.features.get(n)) for r in records], dtype=np.float64) for n in names}
    outputs = np.array([_num(r.output) for r in records], dtype=np.float64)
    return features, outputs


def _num(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def no_reference(model_id: str) -> ConflictError:
    """The 409 for a model stored without a drift reference."""
    message = (f"model '{model_id}' has no drift reference: references are stored when a version is trained "
               "(versions trained before drift monitoring, and families without one, have none); retrain it")
    return ConflictError(message, details=[{"loc": ["model_id"], "msg": "no drift reference"}])


class DriftMonitor:
    """Drift of recent traffic: the reference store and the prediction log together.

    Args:
        references: The reference store.
        predictions: The prediction log (``recent(model_id, limit)``).
        monitor: The monitor settings (window, rule).
    """

    def __init__(self, references: ReferenceStore, predictions: PredictionSource, monitor: MonitorSettings) -> None:
        self.references = references
        self.predictions = predictions
        self.monitor = monitor

    def reference(self, model_id: str) -> DriftReference:
        """The reference of ``model_id``; raises the 409 of :func:`no_reference` when there is none."""
        reference = self.references.get(model_id)
        if reference is None:
            raise no_reference(model_id)
        return reference

    def report(self, model_id: str, window: int | None = None) -> DriftReport:
        """Drift of the last ``window`` logged predictions of ``model_id`` (default ``drift_window``).

        Raises:
            ConflictError: no reference for ``model_id`` (409).
            InvalidInputError: ``window`` below 1.
        """
        size = self.monitor.drift_window if window is None else int(window)
        if size < 1:
            raise InvalidInputError(f"window must be at least 1, got {size}",
                                    details=[{"loc": ["window"], "msg": "must be at least 1"}])
        reference = self.reference(model_id)
        records = list(self.predictions.recent(model_id, size))
        features, outputs = window_from_records(records)
        report = drift_report(reference, features, outputs, DriftRule.from_settings(self.monitor), source="traffic")
        report.extra["records"] = len(records)
        return report

    def value(self, model_id: str, metric: str) -> tuple[float | None, int]:
        """One drift figure of ``model_id`` over recent traffic, with its sample count (for alert rules).

        Metrics (:data:`METRICS`): ``psi_max`` and ``ks_pvalue_min`` over the series compared,
        ``output_psi``, ``drifted_features`` (how many series are drifted), ``drifted_share`` (that
        count over the series compared), ``drifted`` (1.0 or 0.0), and ``data_quality`` (the score of
        the last bars sent to ``POST /v1/monitor/drift`` for the model, with their count). The value
        is None when nothing could be judged (fewer than ``min_samples`` values).

        Raises:
            LookupError: no reference for ``model_id`` (nothing to compare with: the model is skipped).
            InvalidInputError: an unknown metric.
        """
        if metric not in METRICS:
            raise InvalidInputError(f"unknown drift metric '{metric}'; known: {', '.join(METRICS)}",
                                    details=[{"loc": ["metric"], "msg": "unknown drift metric"}])
        if metric == "data_quality":
            quality = self.references.get_quality(model_id)
            if quality is None:
                raise LookupError(f"no bars were scored for model '{model_id}'")
            return quality
        if self.references.get(model_id) is None:
            raise LookupError(f"model '{model_id}' has no drift reference")
        report = self.report(model_id)
        if not report.judged:
            return None, report.n
        series = len(report.features) + (1 if report.output is not None else 0)
        figures: dict[str, float | None] = {
            "psi_max": report.psi_max, "ks_pvalue_min": report.ks_p_min,
            "output_psi": report.output.psi if report.output is not None else None,
            "drifted_features": float(len(report.drifted_features)),
            "drifted_share": len(report.drifted_features) / series if series else None,
            "drifted": 1.0 if report.drifted else 0.0,
        }
        return figures[metric], report.n


def drift_value(state: Any, model_id: str, metric: str) -> tuple[float | None, int]:
    """The alerts engine's entry point: one drift figure of ``model_id`` (see :meth:`DriftMonitor.value`).

    Args:
        state: The app's state (``references``, ``predictions`` and ``settings`` on it).

    Raises:
        LookupError: no reference (or no scored bars, for ``data_quality``), or the stores are not open.
    """
    references = getattr(state, "references", None)
    predictions = getattr(state, "predictions", None)
    settings = getattr(state, "settings", None)
    if references is None or predictions is None or settings is None:
        raise LookupError("the drift reference store or the prediction log is not open")
    return DriftMonitor(references, predictions, settings.monitor).value(model_id, metric)
