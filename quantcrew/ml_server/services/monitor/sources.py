"""The metric catalogue the alert rules read: one name per metric, each with a provider of its current values.

A provider answers "what is this metric now, over this window?" with a list of :class:`Sample` (one per label
set: a route, a model, a client) and how many observations each value stands on. A rule names a metric of the
catalogue; a rule file naming any other metric is refused when the server starts.

Other families register their metrics here with :func:`register_metric`: quality (``quality.*``) and drift
(``drift.*``) are registered below with providers that import their modules only when a rule reads them, so
the catalogue knows the names before (or without) those modules.

Sources owned here:

* ``latency.p95_ms``: the 95th percentile of the request latency per route over the last ``window`` seconds,
  from the rolling per-route window the metrics middleware keeps (:class:`~quantcrew.ml_server.metrics.Metrics`);
* ``breaker.trips``: circuit-breaker openings reported by clients (``POST /v1/monitor/events``), per client and
  server, over the last ``window`` seconds;
* ``jobs.failed``: jobs that ended ``failed`` or ``interrupted`` in the last ``window`` seconds, per kind.
"""

from __future__ import annotations

import importlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from quantcrew.config.settings import Settings
    from quantcrew.ml_server.jobs import JobManager
    from quantcrew.ml_server.metrics import Metrics

__all__ = [
    "CATALOGUE",
    "Catalogue",
    "MetricSpec",
    "Provider",
    "Sample",
    "SourceContext",
    "WindowKind",
    "register_metric",
]

logger = logging.getLogger("quantcrew.ml_server.monitor")

WindowKind = Literal["seconds", "samples"]
"""What a metric's window counts: seconds of wall time, or the most recent observations."""

Labels = tuple[tuple[str, str], ...]
"""A label set as sorted (name, value) pairs: hashable, and the same whatever order it was built in."""


def labels_of(mapping: Mapping[str, Any]) -> Labels:
    """``mapping`` as a :data:`Labels` (values as strings, names sorted)."""
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items()))


@dataclass(frozen=True)
class Sample:
    """One value of a metric.

    Attributes:
        labels: Which series (``(("route", "/v1/rl/act"),)``); empty for a metric without labels.
        value: The value, or None when there is nothing to measure.
        n: Observations the value stands on (a rule with ``min_samples`` above it is not evaluated).
    """

    labels: Labels
    value: float | None
    n: int


class EventCounter(Protocol):
    """Counts client events (breaker openings) per label set since a time."""

    def count_events(self, kind: str, since: datetime) -> list[tuple[Labels, int]]: ...


@dataclass
class SourceContext:
    """What the providers read: the app's parts, filled in by the lifespan (any may be missing in a bench).

    Attributes:
        settings: The settings tree.
        metrics: The app's Prometheus metrics (and the rolling per-route latency window).
        jobs: The job manager.
        events: The store of client-reported events.
        state: Anything else a family's provider needs (the app's state, typically).
    """

    settings: Settings | None = None
    metrics: Metrics | None = None
    jobs: JobManager | None = None
    events: EventCounter | None = None
    state: Any = None


Provider = Callable[[SourceContext, float, Mapping[str, str]], Iterable[Sample]]
"""``provider(context, window, selector) -> samples``: the window in the metric's unit (seconds or
observations); ``selector`` names the label values a rule asked for (a provider may use it to skip work, and
the engine filters on it anyway)."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the catalogue.

    Attributes:
        name: Dotted name a rule uses, e.g. ``"latency.p95_ms"``.
        provider: Computes the metric's current samples.
        description: For a person reading the catalogue.
        window: What the window counts.
        default_window: Window when a rule gives none.
        min_samples: Default fewest observations for a value to be judged (a rule may raise or lower it).
        absent_is_zero: A series missing from the provider's answer reads as 0 (counts), rather than as "no
            data" (measurements), so that a firing count alert resolves once its events age out.
        labels: Label names its samples carry (documentation; selectors may name only these).
    """

    name: str
    provider: Provider
    description: str = ""
    window: WindowKind = "seconds"
    default_window: float = 300.0
    min_samples: int = 1
    absent_is_zero: bool = False
    labels: tuple[str, ...] = ()


@dataclass
class Catalogue:
    """The metrics rules may name."""

    specs: dict[str, MetricSpec] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def register(self, spec: MetricSpec, *, replace: bool = True) -> None:
        """Add ``spec`` (a family registering again, e.g. after a reload, replaces its own entry).

        Raises:
            ValueError: the name is taken and ``replace`` is False.
        """
        with self._lock:
            if not replace and spec.name in self.specs:
                raise ValueError(f"metric {spec.name!r} is registered already")
            self.specs[spec.name] = spec

    def get(self, name: str) -> MetricSpec | None:
        return self.specs.get(name)

    def names(self) -> list[str]:
        return sorted(self.specs)

    def read(self, name: str, context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
        """The metric's samples matching ``selector``.

        Raises:
            KeyError: no such metric.
            Exception: whatever the provider raised (the engine logs it and skips the rule).
        """
        spec = self.specs[name]
        wanted = dict(selector)
        return [s for s in spec.provider(context, window, wanted)
                if all(dict(s.labels).get(k) == v for k, v in wanted.items())]


CATALOGUE = Catalogue()
"""The server's catalogue; families register into it when this module or theirs is imported."""


def register_metric(name: str, provider: Provider, *, description: str = "", window: WindowKind = "seconds",
                    default_window: float = 300.0, min_samples: int = 1, absent_is_zero: bool = False,
                    labels: tuple[str, ...] = ()) -> MetricSpec:
    """Register a metric into :data:`CATALOGUE` (the protocol other families use); returns its spec."""
    spec = MetricSpec(name, provider, description, window, default_window, min_samples, absent_is_zero, labels)
    CATALOGUE.register(spec)
    return spec


# -- sources owned here -------------------------------------------------------------------------------------------


def _latency_p95(context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
    if context.metrics is None:
        return []
    cutoff = time.perf_counter() - window
    out = []
    for (method, route), values in context.metrics.recent_latencies(cutoff).items():
        if not values:
            continue
        values.sort()
        k = max(0, min(len(values) - 1, math.ceil(0.95 * len(values)) - 1))
        out.append(Sample(labels_of({"method": method, "route": route}), values[k] * 1000.0, len(values)))
    return out


def _breaker_trips(context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
    if context.events is None:
        return []
    since = datetime.now(UTC) - timedelta(seconds=window)
    return [Sample(labels, float(count), count) for labels, count in context.events.count_events("breaker_open",
                                                                                                since)]


def _jobs_failed(context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
    if context.jobs is None:
        return []
    since = datetime.now(UTC) - timedelta(seconds=window)
    counts: dict[str, int] = {}
    wanted_kind = selector.get("kind")
    for status in ("failed", "interrupted"):
        for job in context.jobs.list(kind=wanted_kind, status=status, limit=1000):
            finished = job.finished_at
            if finished is not None and (finished if finished.tzinfo else finished.replace(tzinfo=UTC)) >= since:
                counts[job.kind] = counts.get(job.kind, 0) + 1
    return [Sample(labels_of({"kind": kind}), float(n), n) for kind, n in sorted(counts.items())]


register_metric("latency.p95_ms", _latency_p95, labels=("method", "route"), min_samples=20,
                description="95th percentile of request latency in milliseconds per route, over the window.")
register_metric("breaker.trips", _breaker_trips, labels=("client", "server"), absent_is_zero=True,
                description="Circuit-breaker openings reported by clients, per client and server, over the window.")
register_metric("jobs.failed", _jobs_failed, labels=("kind",), absent_is_zero=True, default_window=3600.0,
                description="Jobs that ended failed or interrupted over the window, per job kind.")


# -- quality and drift: names known here, values from their modules ----------------------------------------------

QUALITY_METRICS: tuple[str, ...] = ("hit_rate", "log_loss", "brier", "calibration_error", "sharpe", "mean_return",
                                    "label_stability", "accuracy")
"""Live-quality figures per model version (``quality.<name>``), computed by the monitor's quality module."""
DRIFT_METRICS: tuple[str, ...] = ("psi_max", "ks_pvalue_min", "output_psi", "drifted_features", "drifted_share",
                                  "drifted", "data_quality")
"""Drift figures per deployed model (``drift.<name>``), computed by the monitor's drift module."""


_MAX_MODELS = 200


def _model_ids(context: SourceContext) -> list[str]:
    """The models quality and drift are judged for: the deployed ones (not retired) and those with logged
    predictions (newest first), at most ``_MAX_MODELS``."""
    ids: dict[str, None] = {}
    try:
        deployments = getattr(context.state, "deployments", None)
        if deployments is not None:
            ids.update((row.model_id, None) for row in deployments.list() if row.stage != "retired")
        quality = getattr(context.state, "quality", None)
        if quality is not None and hasattr(quality, "models"):
            ids.update((row[0], None) for row in quality.models())
    except Exception:  # noqa: BLE001 - a store closing under an evaluation: the models read so far
        logger.debug("listing the models to judge failed", exc_info=True)
    return list(ids)[:_MAX_MODELS]


def _family_provider(module: str, function: str, metric: str, *, quality: bool) -> Provider:
    """A provider calling ``module.function`` per model, imported when first read (absent module: no samples)."""

    def provider(context: SourceContext, window: float, selector: Mapping[str, str]) -> list[Sample]:
        try:
            mod = importlib.import_module(f"quantcrew.ml_server.services.monitor.{module}")
        except ImportError:
            return []
        fn = getattr(mod, function, None)
        if fn is None:
            return []
        models = [selector["model_id"]] if "model_id" in selector else _model_ids(context)
        out = []
        for model_id in models:
            try:
                args = (model_id, metric, int(window)) if quality else (model_id, metric)
                value, n = fn(context.state, *args)
            except LookupError:
                continue
            if value is not None:
                out.append(Sample(labels_of({"model_id": model_id}), float(value), int(n)))
        return out

    return provider


for _name in QUALITY_METRICS:
    register_metric(f"quality.{_name}", _family_provider("quality", "quality_value", _name, quality=True),
                    window="samples", default_window=250, min_samples=30, labels=("model_id",),
                    description=f"Live {_name.replace('_', ' ')} of a model version over its last settled "
                                "predictions.")
for _name in DRIFT_METRICS:
    register_metric(f"drift.{_name}", _family_provider("drift", "drift_value", _name, quality=False),
                    window="samples", default_window=500, min_samples=30, labels=("model_id",),
                    description=f"Drift figure {_name} of a deployed model's recent traffic against its reference.")
