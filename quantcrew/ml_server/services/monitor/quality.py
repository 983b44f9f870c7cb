"""Live quality per model version: logged predictions joined to posted outcomes on (subject, as_of).

Per family (what each figure reads is fixed by :mod:`quantcrew.ml_server.services.monitor.capture`):

* classifiers (ensemble P(up); a supervised binary classifier's P(class 1), read as "the next
  bar's return is positive"): ``hit_rate`` (P > 0.5 agrees with the return's sign), ``log_loss``,
  ``brier`` and ``calibration_error`` (expected calibration error over 10 equal-width bins), against
  ``y = realised_return > 0``;
* position takers (ensemble signal -1/0/+1, rl target position, execution signed size):
  ``sharpe`` of ``position * realised_return`` (annualised with 252) and ``mean_return``;
  a supervised regression: ``hit_rate`` of its prediction's sign;
* regimes: ``label_stability`` (share of consecutive predictions of one subject, one per bar,
  keeping their label; no outcome needed) and ``accuracy`` against outcomes that carry a true
  ``regime`` (synthetic traffic).

One prediction per (subject, as_of) counts: the newest one. Each window holds the last ``size``
settled predictions (the server's ``monitor.quality_window`` and :data:`SHORT_WINDOW`) and reports
each figure with its sample count and ``judged = n >= min_samples``.

:func:`quality_value` is the function the alerts engine calls; :class:`QualityCollector` exports
every figure on ``/metrics`` as ``quantcrew_model_quality`` (and ``quantcrew_model_quality_samples``),
computed on scrape and cached for a few seconds.
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from quantcrew.ml_server.errors import NotFoundError
from quantcrew.ml_server.schemas.monitor import ModelQuality, QualityMetric, QualityWindow
from quantcrew.ml_server.services.monitor.capture import POSITION_OF_SIGNAL

__all__ = [
    "SHORT_WINDOW",
    "LiveQuality",
    "QualityCollector",
    "accuracy",
    "brier",
    "expected_calibration_error",
    "hit_rate",
    "label_stability",
    "log_loss",
    "quality_value",
    "sharpe",
]

SHORT_WINDOW = 50
ANNUALISE = 252
_EPS = 1e-15
FloatArray = npt.NDArray[np.float64]

# -- the figures (pure functions) -----------------------------------------------------------------


def hit_rate(score: npt.ArrayLike, realised: npt.ArrayLike, *, threshold: float = 0.5) -> float | None:
    """Share of predictions whose side (``score > threshold``) matches ``realised > 0``."""
    s, r = np.asarray(score, dtype=np.float64), np.asarray(realised, dtype=np.float64)
    return None if s.size == 0 else float(np.mean((s > threshold) == (r > 0)))


def log_loss(p: npt.ArrayLike, y: npt.ArrayLike) -> float | None:
    """Mean binary cross-entropy of probabilities ``p`` for outcomes ``y`` in {0, 1} (clipped at 1e-15)."""
    q, t = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS), np.asarray(y, dtype=np.float64)
    if q.size == 0:
        return None
    return float(-np.mean(t * np.log(q) + (1.0 - t) * np.log1p(-q)))


def brier(p: npt.ArrayLike, y: npt.ArrayLike) -> float | None:
    """Mean squared error of probabilities ``p`` against outcomes ``y`` in {0, 1}."""
    q, t = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return None if q.size == 0 else float(np.mean((q - t) ** 2))


def expected_calibration_error(p: npt.ArrayLike, y: npt.ArrayLike, *, bins: int = 10) -> float | None:
    """``sum_b n_b / n * |mean(y_b) - mean(p_b)|`` over ``bins`` equal-width bins of ``p`` in [0, 1]."""
    q, t = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0), np.asarray(y, dtype=np.float64)
    if q.size == 0:
        return None
    idx = np.minimum((q * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in np.unique(idx):
        m = idx == b
        total += m.sum() / q.size * abs(float(t[m].mean()) - float(q[m].mean()))
    return float(total)


def sharpe(position: npt.ArrayLike, realised: npt.ArrayLike, *, periods: int = ANNUALISE) -> float | None:
    """Annualised Sharpe ratio of ``position * realised`` (None under 2 samples or with no variation)."""
    pnl = np.asarray(position, dtype=np.float64) * np.asarray(realised, dtype=np.float64)
    if pnl.size < 2:
        return None
    sd = float(np.std(pnl, ddof=1))
    if not sd > 1e-15:
        return None
    return float(np.mean(pnl) / sd * math.sqrt(periods))


def mean_return(position: npt.ArrayLike, realised: npt.ArrayLike) -> float | None:
    """Mean of ``position * realised`` per prediction."""
    pnl = np.asarray(position, dtype=np.float64) * np.asarray(realised, dtype=np.float64)
    return None if pnl.size == 0 else float(np.mean(pnl))


def label_stability(subjects: Sequence[str | None], labels: Sequence[str | None]) -> tuple[float | None, int]:
    """Share of consecutive predictions of one subject that keep their label, and how many pairs.

    ``subjects`` and ``labels`` are in time order.
    """
    last: dict[str | None, str | None] = {}
    same = pairs = 0
    for subject, label in zip(subjects, labels, strict=True):
        if subject in last:
            pairs += 1
            same += int(last[subject] == label)
        last[subject] = label
    return (same / pairs if pairs else None), pairs


def accuracy(predicted: Sequence[str | None], truth: Sequence[str | None]) -> tuple[float | None, int]:
    """Share of predictions equal to the truth, over the pairs whose truth is known."""
    pairs = [(p, t) for p, t in zip(predicted, truth, strict=True) if t is not None]
    return (sum(p == t for p, t in pairs) / len(pairs) if pairs else None), len(pairs)


# -- reading the log ---------------------------------------------------------------------------------

_SETTLED = """
SELECT MAX(p.id), p.output, p.label, o.realised_return, o.regime
FROM predictions p JOIN outcomes o ON o.subject = p.subject AND o.as_of = p.as_of
WHERE p.model_id = ? GROUP BY p.subject, p.as_of ORDER BY 1 DESC LIMIT ?
"""
_LABELS = """
SELECT MAX(id), subject, label FROM predictions WHERE model_id = ?
GROUP BY COALESCE(subject, ''), COALESCE(as_of, CAST(id AS TEXT)) ORDER BY 1 DESC LIMIT ?
"""


@dataclass(frozen=True)
class _Settled:
    output: FloatArray
    label: list[str | None]
    realised: FloatArray
    regime: list[str | None]


def _metric(name: str, value: float | None, n: int, min_samples: int) -> QualityMetric:
    ok = value is not None and math.isfinite(value)
    return QualityMetric(metric=name, value=value if ok else None, n=n if ok else 0, judged=ok and n >= min_samples)


class LiveQuality:
    """Computes the live quality of model versions from the registry file's predictions and outcomes.

    Args:
        db_path: The SQLite file holding ``predictions`` and ``outcomes``.
        window: The long window (``monitor.quality_window``).
        min_samples: Fewest samples for a figure to be judged (``monitor.min_samples``).
        cache_s: Seconds a computed report is reused (scrapes and alert evaluations stay cheap).
    """

    def __init__(self, db_path: Path, *, window: int, min_samples: int, cache_s: float = 10.0) -> None:
        self._conn = sqlite3.connect(str(Path(db_path)), check_same_thread=False, timeout=30)  # reads only
        self.windows = tuple(sorted({window, min(SHORT_WINDOW, window)}, reverse=True))
        self.window = window
        self.min_samples = min_samples
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, ModelQuality]] = {}

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _tables_ready(self) -> bool:
        names = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {"predictions", "outcomes", "prediction_models"} <= names

    def models(self) -> list[tuple[str, str, int, str]]:
        """Model versions with logged predictions: ``(model_id, name, version, family)``, newest first."""
        with self._lock:
            if not self._tables_ready():
                return []
            rows = self._conn.execute(
                "SELECT model_id, name, version, family FROM prediction_models ORDER BY last_at DESC").fetchall()
        return [(str(a), str(b), int(c), str(d)) for a, b, c, d in rows]

    def resolve(self, model: str) -> tuple[str, str, int, str] | None:
        """A model id, or a name (its newest logged version)."""
        found = self.models()
        return next((m for m in found if m[0] == model), None) or next((m for m in found if m[1] == model), None)

    def report(self, model_id: str, *, name: str | None = None, version: int | None = None,
               family: str | None = None, cached: bool = True) -> ModelQuality:
        """The quality of one model version (its identity from the log, or as given for one never logged).

        ``cached``: a report computed less than ``cache_s`` ago may answer (scrapes, alert evaluations); False
        computes it now (the API: a client that just posted an outcome sees it counted).

        Raises:
            NotFoundError: no prediction was logged for ``model_id`` and no identity was given.
        """
        recent = self._cache.get(model_id) if cached else None
        if recent is not None and time.monotonic() - recent[0] < self.cache_s:
            return recent[1]
        known = self.resolve(model_id)
        if known is None or known[0] != model_id:
            if name is None or version is None or family is None:
                raise NotFoundError(f"no model '{model_id}': nothing was predicted with it",
                                    details={"model_id": model_id})
            known = (model_id, name, version, family)
        _, name, version, family = known
        with self._lock:
            predictions = int(self._conn.execute("SELECT COUNT(*) FROM predictions WHERE model_id = ?",
                                                 (model_id,)).fetchone()[0]) if self._tables_ready() else 0
            settled = self._settled(model_id, max(self.windows)) if predictions else None
            labels = (self._conn.execute(_LABELS, (model_id, max(self.windows) + 1)).fetchall()
                      if predictions and family == "regime" else [])
        windows = [self._window(family, size, settled, labels) for size in self.windows]
        reply = ModelQuality(model_id=model_id, name=name, version=version, family=family, predictions=predictions,
                             settled=0 if settled is None else len(settled.realised), min_samples=self.min_samples,
                             windows=windows)
        self._cache[model_id] = (time.monotonic(), reply)
        return reply

    def window_of(self, model_id: str, family: str, size: int) -> QualityWindow:
        """One window of any size, computed now (not cached)."""
        with self._lock:
            if not self._tables_ready():
                return QualityWindow(size=size, n=0, metrics=[])
            settled = self._settled(model_id, size)
            labels = self._conn.execute(_LABELS, (model_id, size + 1)).fetchall() if family == "regime" else []
        return self._window(family, size, settled, labels)

    def _settled(self, model_id: str, limit: int) -> _Settled:
        rows = self._conn.execute(_SETTLED, (model_id, limit)).fetchall()
        return _Settled(output=np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64),
                        label=[r[2] for r in rows], realised=np.array([r[3] for r in rows], dtype=np.float64),
                        regime=[r[4] for r in rows])

    def _window(self, family: str, size: int, settled: _Settled | None,
                labels: list[tuple[int, str | None, str | None]]) -> QualityWindow:
        n = 0 if settled is None else min(size, len(settled.realised))
        metrics = list(self._figures(family, settled, n)) if settled is not None else []
        if family == "regime":
            recent = labels[:size + 1][::-1]  # one more prediction than pairs: the window's first pair needs it
            value, pairs = label_stability([r[1] for r in recent], [r[2] for r in recent])
            metrics.insert(0, _metric("label_stability", value, pairs, self.min_samples))
        return QualityWindow(size=size, n=n, metrics=metrics)

    def _figures(self, family: str, s: _Settled, n: int) -> Iterator[QualityMetric]:
        out, lab, ret, reg = s.output[:n], s.label[:n], s.realised[:n], s.regime[:n]
        ms = self.min_samples
        if family == "regime":
            value, k = accuracy(lab, reg)
            yield _metric("accuracy", value, k, ms)
            return
        ok = np.isfinite(out)
        if family in ("ensemble", "supervised"):
            p, r = out[ok], ret[ok]
            probabilities = bool(p.size) and bool(np.all((p >= 0.0) & (p <= 1.0)))
            if family == "ensemble" or probabilities:
                y = (r > 0).astype(np.float64)
                yield _metric("hit_rate", hit_rate(p, r), int(p.size), ms)
                yield _metric("log_loss", log_loss(p, y), int(p.size), ms)
                yield _metric("brier", brier(p, y), int(p.size), ms)
                yield _metric("calibration_error", expected_calibration_error(p, y), int(p.size), ms)
            else:
                yield _metric("hit_rate", hit_rate(p, r, threshold=0.0), int(p.size), ms)
        if family == "ensemble":
            pos = np.array([POSITION_OF_SIGNAL.get(str(v), 0) for v in lab], dtype=np.float64)
            yield _metric("sharpe", sharpe(pos, ret), n, ms)
            yield _metric("mean_return", mean_return(pos, ret), n, ms)
        elif family in ("rl", "execution"):
            pos, r = out[ok], ret[ok]
            yield _metric("sharpe", sharpe(pos, r), int(pos.size), ms)
            yield _metric("mean_return", mean_return(pos, r), int(pos.size), ms)


def quality_value(source: Any, model: str, metric: str, window: int | str | None = None,
                  ) -> tuple[float | None, int]:
    """One live-quality figure of a model id (or of a name's newest logged version): ``(value, n)``.

    The function the alerts engine calls. ``source`` is a :class:`LiveQuality` or the app's state
    (its ``quality``); ``window`` the most recent settled predictions to read (default the long
    window, ``monitor.quality_window``; any size is computed). ``metric`` is one of ``hit_rate``,
    ``log_loss``, ``brier``, ``calibration_error``, ``sharpe``, ``mean_return``,
    ``label_stability``, ``accuracy``. ``(None, 0)`` when the model (or the metric for its
    family) has no figure.
    """
    quality = source if isinstance(source, LiveQuality) else getattr(source, "quality", None)
    if not isinstance(quality, LiveQuality):
        return None, 0
    found = quality.resolve(model)
    if found is None:
        return None, 0
    size = quality.window if window is None else max(1, int(window))
    windows = (quality.report(found[0]).windows if size in quality.windows
               else [quality.window_of(found[0], found[3], size)])
    for w in windows:
        if w.size == size:
            for m in w.metrics:
                if m.metric == metric:
                    return m.value, m.n
    return None, 0


class QualityCollector(Collector):
    """``quantcrew_model_quality{model_id,name,version,family,metric,window}`` and its sample counts."""

    def __init__(self, quality: LiveQuality, *, max_models: int = 200) -> None:
        self.quality = quality
        self.max_models = max_models

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # computed on scrape; nothing to check when registered

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["model_id", "name", "version", "family", "metric", "window"]
        value = GaugeMetricFamily("quantcrew_model_quality", "Live quality of a model version over a window",
                                  labels=labels)
        samples = GaugeMetricFamily("quantcrew_model_quality_samples", "Samples behind each live-quality figure",
                                    labels=labels)
        try:
            models = self.quality.models()[: self.max_models]
            for model_id, name, version, family in models:
                report = self.quality.report(model_id)
                for w in report.windows:
                    for m in w.metrics:
                        lv = [model_id, name, str(version), family, m.metric, str(w.size)]
                        samples.add_metric(lv, float(m.n))
                        if m.value is not None:
                            value.add_metric(lv, m.value)
        except sqlite3.Error:  # a scrape while the file is busy or closing reports nothing, never fails
            pass
        yield value
        yield samples
