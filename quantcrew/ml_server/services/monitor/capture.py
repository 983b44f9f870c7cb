"""What the prediction log keeps of each family's inference, in one place.

Each inference verb calls one function here, with the objects it already holds; the function
queues a record on the :class:`~quantcrew.ml_server.services.monitor.predictions.PredictionLog`
and never raises (a failure is logged and the reply goes out). Anything that costs more than
reading a few attributes (a feature row recomputed from the last bars) is passed as a callable
and runs on the log's writer thread.

The feature space and the output scalar, per family (the CONTRACT shared with the drift
references stored at training: a reference built with :func:`feature_rows` from the matrix named
here, and the outputs named here, is comparable with the logged records):

============  =====================================================  ====================================
family        features (names: :func:`feature_names`)                output (label, confidence)
============  =====================================================  ====================================
regime        the HMM's features after the volatility transform,     index of the label in
              before standardisation (``RegimeDetector._features``;  ``REGIME_LABELS`` (label, its
              names ``detector.features_``)                          filtered probability)
ensemble      ``ensemble.features.build_features`` rows, unscaled    P(up) (signal ``down``/``flat``/
              (names ``model.feature_names``)                        ``up``, its probability)
rl            the policy's scaled feature row (``Market.scaled``,    the target position in [-1, 1]
              names ``Market.feature_names``), position excluded     (action label, its probability)
execution     strategic + market inputs before the network's         the signed size: direction * mean
              scaler (names ``EXECUTION_INPUTS``)                    size (timing, None)
supervised    the row as sent (names ``model.feature_names_``)       P(class 1) for a binary classifier,
                                                                     else the prediction (class, P)
anomaly       ``anomaly.features.build_features`` values (names      the anomaly score (``flagged``/
              ``detector.features_``)                                ``normal``, percentile)
cluster       the row as sent (names ``model.columns_``)             the cluster index (its name, P)
============  =====================================================  ====================================

Each record keeps the LAST row (the predicted bar), at most
:data:`~quantcrew.ml_server.services.monitor.predictions.MAX_FEATURES` entries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from quantcrew.ml_server.services.bars import Bars
from quantcrew.ml_server.services.monitor.predictions import MAX_FEATURES, FeaturesArg, PredictionLog, ScalarArg

__all__ = [
    "POSITION_OF_SIGNAL",
    "anomaly",
    "cluster",
    "ensemble",
    "execution",
    "feature_names",
    "feature_row",
    "feature_rows",
    "regime",
    "rl_act",
    "subject_of",
    "supervised",
]

logger = logging.getLogger("quantcrew.ml_server.monitor")

POSITION_OF_SIGNAL: dict[str, int] = {"down": -1, "flat": 0, "up": 1}
"""The ensemble's position for each signal (its logged ``label``)."""


# -- the shared feature space ----------------------------------------------------------------------


def feature_names(family: str, model: Any) -> tuple[str, ...]:
    """The names of a stored model's input features, in column order, as the log records them.

    Args:
        family: The model's family.
        model: The rebuilt model (rl: the policy's ``Market``, which carries the names; execution: the
            network's ``ModelInfo``, whose metadata names its inputs: ``execution.inputs.EXECUTION_INPUTS``).

    Raises:
        ValueError: a family whose inferences are not logged.
    """
    if family in ("regime", "anomaly"):
        return tuple(model.features_)
    if family == "ensemble":
        return tuple(model.feature_names)
    if family == "rl":
        return tuple(model.feature_names)
    if family == "execution":  # the stored network's ModelInfo (its metadata names its inputs)
        return tuple(model.metadata["inputs"])
    if family == "supervised":
        return tuple(model.feature_names_)
    if family == "cluster":
        return tuple(model.columns_)
    raise ValueError(f"no logged feature space for family '{family}'")


def feature_row(names: Sequence[str], row: npt.ArrayLike) -> dict[str, float]:
    """One row as ``{name: value}``: the first ``MAX_FEATURES`` columns, non-finite values left out.

    The form of a logged record's ``features`` and of each row of a drift reference.
    """
    values = np.asarray(row, dtype=np.float64).reshape(-1)[:MAX_FEATURES].tolist()
    return {str(name): v for name, v in zip(names[:MAX_FEATURES], values, strict=False) if math.isfinite(v)}


def feature_rows(names: Sequence[str], matrix: npt.ArrayLike) -> list[dict[str, float]]:
    """Every row of a ``(rows, len(names))`` feature matrix as :func:`feature_row` writes it."""
    x = np.asarray(matrix, dtype=np.float64)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    return [feature_row(names, r) for r in x]


def _lazy_row(names: Sequence[str], row: npt.ArrayLike) -> tuple[Sequence[str], npt.NDArray[np.float64]]:
    """``(names, a copy of row)``: the writer thread turns it into the mapping; the copy never keeps the
    request's arrays alive."""
    return names, np.array(row, dtype=np.float64, copy=True).reshape(-1)


def subject_of(req: Any, info: Any = None) -> str | None:
    """The request's symbol, else its request key, else the model's recorded symbol, else None."""
    for value in (getattr(req, "symbol", None), getattr(req, "request_key", None)):
        if value:
            return str(value)
    symbol = getattr(info, "metadata", {}).get("symbol") if info is not None else None
    return str(symbol) if symbol else None


def _tail(bars: Bars, k: int) -> Bars:
    """A copy of the last ``k`` bars (causal features of the last bar need no more)."""
    k = max(2, min(k, len(bars)))
    vol = None if bars.volume is None else bars.volume[-k:].copy()
    return Bars(timestamps=bars.timestamps[-k:], times=bars.times[-k:].copy(), open=bars.open[-k:].copy(),
                high=bars.high[-k:].copy(), low=bars.low[-k:].copy(), close=bars.close[-k:].copy(), volume=vol,
                data_hash=bars.data_hash)


def _safe(fn: Callable[..., None]) -> Callable[..., None]:
    def wrapped(log: PredictionLog | None, *args: Any, **kwargs: Any) -> None:
        if log is None or not log.enabled:
            return
        try:
            fn(log, *args, **kwargs)
        except Exception:  # logging a prediction must never fail the request that made it
            logger.exception("prediction log: %s record not built", fn.__name__)

    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


def _put(log: PredictionLog, info: Any, route: str, *, request_hash: str, subject: str | None, as_of: Any,
         features: FeaturesArg, output: ScalarArg, label: str | None, confidence: ScalarArg,
         shadow: bool = False) -> None:
    log.record(model_id=info.model_id, name=info.name, version=info.version, family=info.family, route=route,
               request_hash=request_hash, subject=subject, as_of=as_of, features=features, output=output,
               label=label, confidence=confidence, shadow=shadow)


# -- one function per inference verb -------------------------------------------------------------


@_safe
def regime(log: PredictionLog, req: Any, info: Any, detector: Any, bars: Bars, reply: Any) -> None:
    """``/v1/regime/predict``: the current label, its probability, the last bar's HMM features."""
    from quantcrew.ml_server.schemas.regime import REGIME_LABELS

    tail = _tail(bars, int(detector.vol_window) + 2)
    names = tuple(detector.features_)

    def features() -> Mapping[str, float]:
        return feature_row(names, detector._features(tail)[-1]) if names and detector.hmm_ is not None else {}

    label = reply.current_label
    _put(log, info, "/v1/regime/predict", request_hash=reply.data_hash, subject=subject_of(req, info),
         as_of=reply.as_of, features=features, output=float(REGIME_LABELS.index(label)), label=label,
         confidence=reply.current_probability)


@_safe
def ensemble(log: PredictionLog, req: Any, info: Any, model: Any, prepared: Any, reply: Any, *,
             shadow: bool) -> None:
    """``/v1/ensemble/predict``: P(up), the signal and its probability (primary and shadow versions)."""
    row = getattr(prepared, "last_features", None)
    features = _lazy_row(tuple(model.feature_names), row) if row is not None else None
    _put(log, info, "/v1/ensemble/predict", request_hash=reply.data_hash, subject=subject_of(req),
         as_of=reply.as_of, features=features, output=reply.probabilities.get("up"), label=reply.signal,
         confidence=reply.confidence, shadow=shadow)


@_safe
def rl_act(log: PredictionLog, req: Any, info: Any, market: Any, answer: Any, reply_hash: str,
           as_of: Any) -> None:
    """``/v1/rl/act``: one policy's target position and the scaled features it observed."""
    probs = answer.probabilities
    _put(log, info, "/v1/rl/act", request_hash=reply_hash, subject=subject_of(req, info), as_of=as_of,
         features=_lazy_row(tuple(market.feature_names), market.scaled[-1]), output=float(answer.target_position),
         label=answer.label, confidence=max(probs.values()) if probs else None)


@_safe
def execution(log: PredictionLog, req: Any, info: Any, prepared: Any, reply: Any) -> None:
    """``/v1/execution/plan``: the last decision's signed size and timing, its inputs before scaling."""
    plan = reply.plans[-1]
    raw = getattr(prepared, "raw", None)
    features = _lazy_row(tuple(prepared.names), raw[-1]) if raw is not None else None
    _put(log, info, "/v1/execution/plan", request_hash=reply.data_hash, subject=subject_of(req, info),
         as_of=reply.as_of, features=features, output=plan.target_fraction, label=plan.timing, confidence=None)


@_safe
def supervised(log: PredictionLog, req: Any, info: Any, model: Any, matrix: Any, reply: Any) -> None:
    """``/v1/supervised/predict``: the last row's prediction; a classifier's P(class 1) (binary) or class index.

    A classifier asked without probabilities gets them computed on the writer thread, off the reply's path.
    """
    prediction = reply.predictions[-1]
    row = np.array(matrix.values[-1:], dtype=np.float64, copy=True)
    if model.task != "classification":
        output: float | Callable[[], float | None] | None = float(prediction)
        label, confidence = None, None
    else:
        classes = list(reply.classes or [])
        given = reply.probabilities[-1] if reply.probabilities else None
        cache: dict[str, list[float] | None] = {}

        def proba() -> list[float] | None:
            if "p" not in cache:
                p = given if given is not None else model.predict_proba(row)
                cache["p"] = None if p is None else np.asarray(p, dtype=np.float64).reshape(-1).tolist()
            return cache["p"]

        def class_output() -> float | None:
            p = proba()
            if p is not None and len(p) == 2:
                return p[1]
            return float(classes.index(prediction)) if prediction in classes else None

        def class_confidence() -> float | None:
            p = proba()
            return max(p) if p else None

        output, label, confidence = class_output, str(prediction), class_confidence
    _put(log, info, "/v1/supervised/predict", request_hash=reply.data_hash, subject=subject_of(req, info),
         as_of=reply.as_of, features=_lazy_row(list(matrix.columns), row[-1]), output=output, label=label,
         confidence=confidence)


@_safe
def anomaly(log: PredictionLog, req: Any, info: Any, detector: Any, bars: Bars, reply: Any,
            build_features: Callable[..., Any], warmup_bars: Callable[..., int]) -> None:
    """``/v1/anomaly/score``: the last bar's score, flag and percentile.

    ``build_features`` and ``warmup_bars`` are the anomaly family's (passed in: the monitor imports no family).
    """
    names = tuple(detector.features_)
    tail = _tail(bars, warmup_bars(names, detector.zscore_window) + 1)

    def features() -> Mapping[str, float]:
        return feature_row(names, build_features(tail, names, window=detector.zscore_window).values[-1])

    _put(log, info, "/v1/anomaly/score", request_hash=reply.data_hash, subject=subject_of(req, info),
         as_of=reply.as_of, features=features, output=reply.current_score,
         label="flagged" if reply.current_flagged else "normal", confidence=reply.current_percentile)


@_safe
def cluster(log: PredictionLog, req: Any, info: Any, matrix: Any, reply: Any) -> None:
    """``/v1/cluster/predict``: the last row's cluster."""
    k = reply.labels[-1]
    probs = reply.probabilities[-1] if reply.probabilities else None
    _put(log, info, "/v1/cluster/predict", request_hash=reply.data_hash, subject=subject_of(req, info),
         as_of=reply.as_of, features=_lazy_row(list(matrix.columns), matrix.values[-1]), output=float(k),
         label=str(k), confidence=max(probs) if probs else None)
