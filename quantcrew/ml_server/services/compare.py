"""Champion against challenger: both versions' per-row losses on the rows of one request, then the paired gate.

The loss of each family (lower is better), computed for both versions on exactly the same rows:

* ``ensemble``: the binary log loss of the calibrated P(up) at each bar against the next bar's
  direction (up when the next close is above this one); bars both versions can predict, from
  ``score_from`` on when given (the earlier bars are warm-up context), the last bar left out (it
  has no next bar). Every bar each version can predict is asked in one batch, at
  most ``inference.max_request_batch`` bars (the latest ones);
* ``supervised``: squared error (regression) or the log loss of the true class (classification)
  on the request's ``features`` and ``target`` rows;
* ``regime``: minus the one-step-ahead predictive log-likelihood of each scored bar's features
  under each detector's filtered state distribution (its own features, from ``data``);
* ``rl``: minus the net return after costs (``cost_bps``, ``slippage_bps``) of each policy's
  position, chosen at bar ``t`` and earning bar ``t + 1``'s return;
* ``execution``: minus the return of the position each network sizes for the request's
  ``signals`` (one per each of the last ``len(signals)`` bars of ``data``; required: a network
  sizes a signal another model makes, so bars alone cannot score it).

Details of the last three in :mod:`quantcrew.ml_server.services.compare_losses`.

The verdict is :func:`~quantcrew.ml_server.services.gate.challenger_gate` (one-sided
Diebold-Mariano on the loss differences, Newey-West variance, a minimum sample size). Versions
of two families are refused (422 naming ``challenger_id``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from anyio import to_thread

from quantcrew.ml_server.inference import InferenceRuntime
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.ensemble import EnsemblePredictRequest
from quantcrew.ml_server.schemas.lineage import CompareRequest, CompareResponse
from quantcrew.ml_server.services import compare_losses
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.compare_losses import first_scored, invalid
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.gate import challenger_decision, challenger_gate

__all__ = ["COMPARABLE", "compare"]

FloatArray = npt.NDArray[np.float64]

COMPARABLE = ("ensemble", "supervised", "regime", "rl", "execution")
_FLOOR = 1e-12


async def compare(req: CompareRequest, registry: ModelRegistry, deployments: DeploymentStore,
                  runtime: InferenceRuntime) -> CompareResponse:
    """Both versions' losses on the request's rows and the challenger gate's verdict.

    Raises:
        ModelNotFoundError: an unknown id (404, naming it).
        InvalidInputError: versions of two families, a family not compared, the rows that family
            needs missing, or rows the models cannot score (422 naming the field).
    """
    champion = await to_thread.run_sync(registry.get, req.champion_id)
    challenger = await to_thread.run_sync(registry.get, req.challenger_id)
    if champion.family != challenger.family:
        raise invalid(f"champion '{champion.model_id}' is a {champion.family} model but challenger "
                      f"'{challenger.model_id}' is a {challenger.family} model; compare versions of one family",
                      "challenger_id")
    if champion.family == "ensemble":
        loss, a, b, span = await _ensemble_losses(req, champion, challenger, registry, deployments, runtime)
    elif champion.family == "supervised":
        loss, a, b = await to_thread.run_sync(_supervised_losses, req, registry)
        span = (None, None)
    elif champion.family in ("regime", "rl", "execution"):
        loss, a, b, span = await to_thread.run_sync(_bar_losses, req, champion.family, registry, runtime.device)
    else:
        raise invalid(f"comparing {champion.family} models is not supported; supported families: "
                      f"{', '.join(COMPARABLE)}", "champion_id")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise invalid(f"the {champion.family} models' losses on these rows are not finite (values far outside "
                      "what they were fitted on?)", "data" if req.data is not None else "features")
    verdict = challenger_gate(a, b, min_samples=req.min_samples, alpha=req.alpha, lag=req.lag, loss=loss,
                              span_start=span[0], span_end=span[1])
    return CompareResponse(
        family=champion.family, champion_id=champion.model_id, challenger_id=challenger.model_id, loss=loss,
        n=int(a.shape[0]), champion_mean_loss=_mean(a), challenger_mean_loss=_mean(b),
        passed=verdict.passed, reason=verdict.summary, decision=challenger_decision(verdict), verdict=verdict)


def _bar_losses(req: CompareRequest, family: str, registry: ModelRegistry, device: str) -> compare_losses.Losses:
    if req.data is None:
        raise invalid(f"a {family} comparison needs `data`: the recent bars both versions are scored on", "data")
    bars = bars_from_payload(req.data, min_rows=2)
    first = first_scored(req.data, req.score_from)
    ids = (req.champion_id, req.challenger_id)
    if family == "regime":
        return compare_losses.regime_losses(registry, ids, bars, first)
    if family == "rl":
        return compare_losses.rl_losses(registry, ids, bars, first, cost_bps=req.cost_bps,
                                        slippage_bps=req.slippage_bps)
    return compare_losses.execution_losses(registry, ids, bars, first, req.signals, device)


# -- the ensemble ----------------------------------------------------------------------------------


async def _ensemble_losses(req: CompareRequest, champion: ModelInfo, challenger: ModelInfo,
                           registry: ModelRegistry, deployments: DeploymentStore,
                           runtime: InferenceRuntime) -> tuple[str, FloatArray, FloatArray, tuple[str | None, ...]]:
    from quantcrew.ml_server.services.ensemble import service  # torch loads with the first model
    from quantcrew.ml_server.services.ensemble.features import WARMUP

    if req.data is None:
        raise invalid("an ensemble comparison needs `data`: the recent bars both versions predict", "data")
    data = req.data
    n = len(data.timestamps)
    ups: list[dict[int, float]] = []
    for info in (champion, challenger):
        model, _ = await to_thread.run_sync(service.load, registry, info.model_id, runtime.device)
        last = min(n - WARMUP - model.window + 1, runtime.inference.max_request_batch)
        if last < 1:
            raise invalid(f"data has {n} bars; model '{info.model_id}' needs at least "
                          f"{WARMUP + model.window} to predict one", "data")
        reply = await service.predict(
            EnsemblePredictRequest(data=data, model_id=info.model_id, last=last, include_rl=False),
            registry, deployments, runtime)
        ups.append({n - last + i: float(p.probabilities["up"]) for i, p in enumerate(reply.points)})
    first = first_scored(data, req.score_from)
    rows = sorted(r for r in set(ups[0]) & set(ups[1]) if first <= r < n - 1)
    close = np.asarray(data.close, dtype=np.float64)
    up = np.array([close[r + 1] > close[r] for r in rows], dtype=bool)
    a = _binary_log_loss(np.array([ups[0][r] for r in rows]), up)
    b = _binary_log_loss(np.array([ups[1][r] for r in rows]), up)
    span = (data.timestamps[rows[0]].isoformat(), data.timestamps[rows[-1]].isoformat()) if rows else (None, None)
    return "log loss of P(up) against the next bar's direction", a, b, span


def _binary_log_loss(p_up: FloatArray, up: npt.NDArray[np.bool_]) -> FloatArray:
    p = np.clip(p_up, _FLOOR, 1.0 - _FLOOR)
    out: FloatArray = -np.where(up, np.log(p), np.log1p(-p))
    return out


# -- supervised models ------------------------------------------------------------------------------


def _supervised_losses(req: CompareRequest, registry: ModelRegistry) -> tuple[str, FloatArray, FloatArray]:
    from quantcrew.ml_server.services.adapter import rebuild
    from quantcrew.ml_server.services.matrix import matrix_from_payload
    from quantcrew.ml_server.services.supervised.model import SupervisedModel
    from quantcrew.ml_server.services.supervised.split import check_magnitude

    if req.features is None or req.target is None:
        raise invalid("a supervised comparison needs `features` and `target`: the rows both versions score",
                      "features")
    matrix = matrix_from_payload(req.features, min_rows=1, field="features")
    check_magnitude(matrix.values, "features.values")
    losses: list[FloatArray] = []
    kinds: set[str] = set()
    for model_id in (req.champion_id, req.challenger_id):
        model, _ = rebuild(registry, model_id, SupervisedModel)
        model.check_columns(matrix.columns, "features")
        if model.classes_ is None:
            kinds.add("squared error")
            losses.append(_squared_error(model.predict(matrix.values), req.target))
        else:
            kinds.add("log loss of the true class")
            proba = model.predict_proba(matrix.values)
            assert proba is not None  # a classifier
            losses.append(_class_log_loss(proba, list(model.classes_), req.target))
    if len(kinds) > 1:
        raise invalid("one version is a regressor and the other a classifier; compare versions of one task",
                      "challenger_id")
    return kinds.pop(), losses[0], losses[1]


def _squared_error(predicted: Sequence[float] | Sequence[str], target: Sequence[float] | Sequence[str]) -> FloatArray:
    try:
        y = np.asarray([float(t) for t in target], dtype=np.float64)
    except ValueError as exc:
        raise invalid(f"a regression comparison needs numeric targets: {exc}", "target") from exc
    out: FloatArray = (np.asarray(predicted, dtype=np.float64) - y) ** 2
    return out


def _class_log_loss(proba: FloatArray, classes: Sequence[object],
                    target: Sequence[float] | Sequence[str]) -> FloatArray:
    index = {_label(c): i for i, c in enumerate(classes)}
    picked = np.array([proba[row, index[_label(t)]] if _label(t) in index else 0.0 for row, t in enumerate(target)],
                      dtype=np.float64)  # a class the model never saw has probability 0 under it
    out: FloatArray = -np.log(np.maximum(picked, _FLOOR))
    return out


def _label(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _mean(x: FloatArray) -> float | None:
    if x.shape[0] == 0:
        return None
    m = float(x.mean())
    return m if math.isfinite(m) else None
