"""The ensemble family's verbs: train (a walk-forward job), predict with uncertainty, deployment stages.

A prediction resolves the version that answers (pinned, or the deployment stages of the model
name), rebuilds it through the registry's one cache, prepares its input windows, runs the
forward pass on the device thread (gathered with concurrent requests by the dynamic batcher),
and turns the logits into the reply. Preparation and post-processing are plain numpy; torch
loads with the first model, not with this module.

A name whose trained versions all failed their quality gate has none deployed: a prediction
for it is a :class:`ModelGatedError` (409 ``model_gated``) naming the newest version and its
verdict, so a client can tell "judged and rejected" from "never trained" (404).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from anyio import to_thread

from quantcrew.ml_server.errors import InvalidInputError, NotFoundError
from quantcrew.ml_server.fanout import TaskPool
from quantcrew.ml_server.inference import InferenceRuntime, check_samples
from quantcrew.ml_server.jobs import JobManager
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.schemas.common import ModelInfo
from quantcrew.ml_server.schemas.ensemble import (
    CLASS_LABELS,
    DeploymentInfo,
    DeploymentList,
    DeploymentRequest,
    EnsemblePredictRequest,
    EnsemblePredictResponse,
    EnsembleTrainRequest,
    ServedBy,
    ShadowEntry,
    ShadowLog,
    SignalPoint,
    SourceWeight,
)
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.schemas.rl import RLActRequest
from quantcrew.ml_server.services import adapter
from quantcrew.ml_server.services.bars import bars_from_payload
from quantcrew.ml_server.services.deployment import Deployment, DeploymentStore, deployment_info
from quantcrew.ml_server.services.ensemble.features import WARMUP, build_features
from quantcrew.ml_server.services.ensemble.naming import ensemble_name
from quantcrew.ml_server.services.execution.service import gated_error
from quantcrew.ml_server.services.matrix import check_columns, matrix_from_payload
from quantcrew.ml_server.services.monitor import capture
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.rl import service as rl_service
from quantcrew.quant import calibration

if TYPE_CHECKING:
    from quantcrew.ml_server.services.ensemble.model import EnsembleModel, Logits

__all__ = [
    "Prepared",
    "Resolved",
    "deploy",
    "deployment_list",
    "ensemble_name",
    "finish",
    "is_cached",
    "load",
    "model_name",
    "predict",
    "prepare",
    "resolve",
    "rl_source",
    "shadow_log",
    "train",
]

FloatArray = npt.NDArray[np.float64]

_MODEL_MODULE = "quantcrew.ml_server.services.ensemble.model"
"""The module of the ensemble adapter (it imports torch)."""


# -- training ------------------------------------------------------------------------------------


def train(req: EnsembleTrainRequest, registry: ModelRegistry, jobs: JobManager, deployments: DeploymentStore, *,
          device: str, min_rows: int, compute_threads: int, pool: TaskPool | None = None) -> JobInfo:
    """Start a walk-forward training job.

    Features, labels and folds are checked first, so a series too short for the window,
    horizon and folds is an :class:`InvalidInputError` now, not a failed job later.
    """
    from quantcrew.ml_server.services.ensemble import training  # torch loads with the first job

    bars = bars_from_payload(req.data, min_rows=min_rows)
    plan = training.prepare_plan(req, bars, device=device, compute_threads=compute_threads, pool=pool or TaskPool())
    iso = bars.iso()
    params = {
        "name": plan.name, "symbol": req.symbol, "architectures": list(req.architectures), "members": req.members,
        "window": req.window, "horizon": req.horizon, "folds": len(plan.folds), "scheme": req.scheme,
        "test_start": iso[plan.folds[0].test_start], "n_bars": len(bars), "data_hash": bars.data_hash,
        "seed": req.seed, "stage": req.stage,
    }
    return jobs.submit("ensemble_train", lambda ctx: training.train_ensemble(plan, registry, deployments, ctx),
                       params=params)


# -- stored versions -----------------------------------------------------------------------------


def load(registry: ModelRegistry, model_id: str, device: str) -> tuple[EnsembleModel, ModelInfo]:
    """The stored ensemble ``model_id`` on ``device``, from the registry's cache or rebuilt.

    Raises:
        ModelNotFoundError: unknown id, or not an ensemble (404).
        ArtifactIntegrityError: the artifact changed, or its tensors do not fit its metadata (409).
    """
    from quantcrew.ml_server.services.ensemble.model import EnsembleModel  # torch loads with the first model

    return adapter.rebuild(registry, model_id, EnsembleModel, device=device)


def is_cached(registry: ModelRegistry, model_id: str, device: str) -> bool:
    """Whether :func:`load` of ``model_id`` on ``device`` would answer from the registry's cache now."""
    if _MODEL_MODULE not in sys.modules:
        # the class is not loaded, so no ensemble was rebuilt in this process and none is cached;
        # importing it here would load torch on the event loop, not on the first rebuild's thread
        return False
    from quantcrew.ml_server.services.ensemble.model import EnsembleModel

    return adapter.is_cached(registry, model_id, EnsembleModel, device=device)


@dataclass(frozen=True)
class Resolved:
    """The version that answers a request and the shadows that also run."""

    model_id: str
    served_by: ServedBy
    shadows: list[Deployment]
    request_key: str


def model_name(req: EnsemblePredictRequest) -> str:
    """The deployed model name a request asks for: its ``name``, else ``ensemble-<symbol>``."""
    return req.name or ensemble_name(req.symbol)


def _ensemble_info(registry: ModelRegistry, model_id: str) -> ModelInfo:
    info = registry.get(model_id)
    if info.family != "ensemble":
        raise NotFoundError(f"model '{model_id}' is a {info.family} model, not an ensemble",
                            details={"model_id": model_id})
    return info


def resolve(req: EnsemblePredictRequest, registry: ModelRegistry, deployments: DeploymentStore) -> Resolved:
    """A pinned ``model_id``, or the deployment stages of the model name with the sticky request key."""
    key = req.request_key or req.symbol or req.name or ""
    if req.model_id is not None:
        info = _ensemble_info(registry, req.model_id)
        d = deployments.get(req.model_id)
        return Resolved(req.model_id, ServedBy(model_id=info.model_id, name=info.name, version=info.version,
                                               stage=d.stage if d else info.stage, variant="pinned", bucket=None),
                        [], key)
    name = model_name(req)
    try:
        route = deployments.peek(name, key) or deployments.route(name, key)  # no lock while nothing changed
    except NotFoundError:
        gated = gated_error(registry, family="ensemble", name=name, symbol=req.symbol, what="ensemble version")
        if gated is not None:
            raise gated from None
        raise
    p = route.primary
    return Resolved(p.model_id, ServedBy(model_id=p.model_id, name=p.name, version=p.version, stage=p.stage,
                                         variant=route.variant, bucket=route.bucket), route.shadows, key)


@dataclass(frozen=True)
class Prepared:
    """One request's scaled windows and what the reply needs about its input."""

    windows: npt.NDArray[np.float32]
    timestamps: list[datetime | None]
    data_hash: str
    as_of: datetime | None
    last_features: FloatArray | None = None  # the last requested bar's feature row, unscaled (prediction log)


def _too_short(field: str, have: int, need: int, window: int, last: int) -> InvalidInputError:
    msg = (f"{field} has {have} rows; this model reads {window}-bar windows"
           + (f" of features that need {WARMUP} warm-up bars" if field == "data" else "")
           + (f" for each of the last {last} bars" if last > 1 else "") + f", so at least {need} are needed")
    return InvalidInputError(msg, details=[{"loc": [field], "msg": f"need at least {need} rows"}])


def prepare(req: EnsemblePredictRequest, model: EnsembleModel, *, max_request_batch: int) -> Prepared:
    """Features (computed here from bars, or as sent) -> standardised windows ending at each requested bar.

    Raises:
        InvalidInputError: too few rows for the window, feature columns that do not match the
            model, or more windows than the server's ``inference.max_request_batch``.
    """
    if req.last > max_request_batch:
        raise InvalidInputError(
            f"last={req.last} asks for a batch of {req.last} windows; the cap is {max_request_batch}",
            details=[{"loc": ["last"], "msg": f"at most {max_request_batch}"}])
    window = model.window
    as_of: datetime | None
    if req.data is not None:
        need = WARMUP + window + req.last - 1
        if len(req.data) < need:
            raise _too_short("data", len(req.data), need, window, req.last)
        bars = bars_from_payload(req.data, min_rows=need)
        feats = build_features(bars.open, bars.high, bars.low, bars.close, bars.volume)
        stamps: list[datetime | None] = list(bars.timestamps)
        data_hash, as_of = bars.data_hash, bars.as_of
    else:
        assert req.features is not None
        check_columns(list(model.feature_names), list(req.features.columns), field="features")
        need = window + req.last - 1
        if len(req.features.values) < need:
            raise _too_short("features", len(req.features.values), need, window, req.last)
        matrix = matrix_from_payload(req.features, min_rows=need, field="features")
        feats = matrix.values
        ts = req.features.timestamps
        stamps = list(ts) if ts is not None else [None] * len(feats)
        data_hash, as_of = matrix.data_hash, matrix.as_of
    n = len(feats)
    rows = np.arange(n - req.last, n, dtype=np.int64)
    return Prepared(model.windows(feats, rows), [stamps[int(r)] for r in rows], data_hash, as_of,
                    last_features=feats[n - 1])


def rl_may_join(req: EnsemblePredictRequest) -> bool:
    """Whether the request allows an RL policy to join (the registry is not asked here)."""
    return (req.include_rl and req.rl_weight > 0.0 and req.data is not None and req.last == 1
            and req.symbol is not None)


def rl_source(req: EnsemblePredictRequest, registry: ModelRegistry) -> tuple[str, FloatArray] | None:
    """The newest discrete actor-critic RL policy trained on this symbol, as a probability source.

    It joins only for one bar sent as OHLCV (a policy observes its own features at the last
    bar); its short / flat / long probabilities stand for down / flat / up.
    """
    if not rl_may_join(req) or req.data is None:
        return None
    stored = [m for m in registry.list(family="rl") if m.metadata.get("symbol") == req.symbol
              and m.metadata.get("action_mode") == "discrete" and m.metadata.get("algorithm") in ("ppo", "a2c")]
    if not stored:
        return None
    chosen = next((m for m in stored if m.metadata.get("agent") == "balanced"), stored[0])
    answer = rl_service.act(RLActRequest(data=req.data, model_ids=[chosen.model_id]), registry).actions[0]
    if answer.probabilities is None:
        return None
    p = np.array([answer.probabilities[k] for k in ("short", "flat", "long")], dtype=np.float64)
    return f"rl:{answer.agent}-{answer.algorithm}", p


def finish(req: EnsemblePredictRequest, model: EnsembleModel, info: ModelInfo, resolved: Resolved,
           prepared: Prepared, logits: Mapping[str, npt.NDArray[np.float32]], *, samples: int | None,
           shadows_run: int = 0, rl: tuple[str, FloatArray] | None = None) -> EnsemblePredictResponse:
    """Calibrated, weighted member probabilities -> the signal and its uncertainty metrics."""
    mc = samples is not None
    archs, probs, weights = model.member_probabilities(logits, mc=mc)
    temps = model.mc_temperatures_ if mc else model.temperatures_
    sources = [SourceWeight(source=a, members=int(logits[a].shape[0]), weight=model.weights_[a],
                            temperature=temps[a]) for a in archs]
    if rl is not None:
        weights = weights * (1.0 - req.rl_weight)
        probs = np.concatenate([probs, rl[1][None, None, :]], axis=0)
        weights = np.append(weights, req.rl_weight)
        sources = [s.model_copy(update={"weight": s.weight * (1.0 - req.rl_weight)}) for s in sources]
        sources.append(SourceWeight(source=rl[0], members=1, weight=req.rl_weight, temperature=1.0))
    unc = calibration.uncertainty(probs, weights)
    points = [_point(unc, i, ts) for i, ts in enumerate(prepared.timestamps)]
    last = points[-1]
    method = ("mc_dropout" if mc else "ensemble") + ("+rl" if rl is not None else "")
    return EnsemblePredictResponse(
        model_id=info.model_id, model_version=info.version, method_used=method, fallback=False,
        data_hash=prepared.data_hash, seed=req.seed, as_of=prepared.as_of,
        signal=last.signal, position=last.position, probabilities=last.probabilities, confidence=last.confidence,
        agreement_score=last.agreement_score, consensus_strength=last.consensus_strength,
        divergence_metric=last.divergence_metric, predictive_entropy=last.predictive_entropy, points=points,
        sources=sources, served_by=resolved.served_by, samples=samples, shadows_run=shadows_run,
        window=model.window, horizon=model.horizon,
    )


def _point(unc: calibration.Uncertainty, i: int, ts: datetime | None) -> SignalPoint:
    p = unc.probs[i]
    k = int(np.argmax(p))
    return SignalPoint(
        timestamp=ts, signal=CLASS_LABELS[k], position=k - 1,
        probabilities={c: float(v) for c, v in zip(CLASS_LABELS, p, strict=True)}, confidence=float(p[k]),
        agreement_score=float(unc.agreement_score[i]), consensus_strength=float(unc.consensus_strength[i]),
        divergence_metric=float(unc.divergence_metric[i]), predictive_entropy=float(unc.predictive_entropy[i]),
    )


def shadow_output(reply: EnsemblePredictResponse) -> dict[str, float | str | int | None]:
    """What the shadow log keeps of a shadow version's answer."""
    return {"signal": reply.signal, "confidence": reply.confidence, "model_version": reply.model_version,
            **{f"p_{k}": v for k, v in reply.probabilities.items()}, "divergence_metric": reply.divergence_metric}


# -- predict -------------------------------------------------------------------------------------


async def predict(req: EnsemblePredictRequest, registry: ModelRegistry, deployments: DeploymentStore,
                  runtime: InferenceRuntime, log: PredictionLog | None = None) -> EnsemblePredictResponse:
    """Signal, calibrated probability and uncertainty metrics from the deployed (or pinned) version.

    A shadow version also runs on the same input; its answer is logged, never returned. Every
    version's answer (primary and shadows) is also recorded on the prediction ``log``.

    Raises:
        InvalidInputError: too few rows, columns that do not match the model, over a cap (422).
        NotFoundError: no such model, or no version of the name was ever trained (404).
        ModelGatedError: versions of the name were trained, none is deployed (409).
        ArtifactIntegrityError: the stored version does not rebuild (409).
    """
    inf = runtime.inference
    samples = None if req.method == "ensemble" else check_samples(req.samples or inf.mc_samples, inf.max_samples)
    resolved = resolve(req, registry, deployments)  # kept rows: no statement while nothing changed
    reply = await _answer(req, resolved.model_id, resolved, registry, runtime, samples,
                          shadows_run=len(resolved.shadows), log=log)
    for shadow in resolved.shadows:
        try:
            out = await _answer(req, shadow.model_id, resolved, registry, runtime, samples, shadows_run=0, log=log,
                                shadow=True)
        except NotFoundError:
            continue
        await to_thread.run_sync(partial(deployments.log_shadow, model_id=shadow.model_id,
                                         primary_model_id=resolved.model_id, request_key=resolved.request_key,
                                         output=shadow_output(out)))
    return reply


async def _answer(req: EnsemblePredictRequest, model_id: str, resolved: Resolved, registry: ModelRegistry,
                  runtime: InferenceRuntime, samples: int | None, *, shadows_run: int, log: PredictionLog | None = None,
                  shadow: bool = False) -> EnsemblePredictResponse:
    inf = runtime.inference

    def stage() -> tuple[EnsembleModel, ModelInfo, Prepared, tuple[str, FloatArray] | None]:
        # one thread hop per request for everything before the forward pass (each hop costs
        # GIL hand-offs that add up at 64 concurrent clients)
        model, info = load(registry, model_id, runtime.device)
        prepared = prepare(req, model, max_request_batch=inf.max_request_batch)
        return model, info, prepared, rl_source(req, registry)

    if is_cached(registry, model_id, runtime.device) and not rl_may_join(req) and req.data is None:
        # a cached model and an already-engineered window: ~0.3 ms of numpy, cheaper inline than
        # the thread hop it would take (measured: hops cost more than the work at 64 clients)
        model, info, prepared, rl = stage()
    else:  # rebuilding a model, computing features from bars, or asking an RL policy: off the loop
        model, info, prepared, rl = await to_thread.run_sync(stage)
    logits: Logits
    if samples is not None and req.seed is not None:
        # a seeded draw is reproducible only outside a shared batch; it still runs on the device thread
        logits = await runtime.on_device(model.mc_logits, prepared.windows, samples, req.seed)
    else:
        run = model.batch_logits if samples is None else partial(model.batch_mc_logits, samples=samples)
        logits = await runtime.batched(f"ensemble:{model_id}:{samples or 0}", "ensemble", run, prepared.windows)
    reply = finish(req, model, info, resolved, prepared, logits, samples=samples, shadows_run=shadows_run, rl=rl)
    capture.ensemble(log, req, info, model, prepared, reply, shadow=shadow)
    return reply


# -- deployment stages ---------------------------------------------------------------------------


_DEPLOYABLE = ("ensemble", "execution")


def deploy(req: DeploymentRequest, registry: ModelRegistry, deployments: DeploymentStore) -> DeploymentInfo:
    """Deploy a stored ensemble (or execution network) version as shadow, canary, gradual or full.

    This is also the hand override of a gate: a version that failed its gate answers once
    deployed here (its verdict stays in its metadata).

    Raises:
        NotFoundError: no such model, or neither an ensemble nor an execution network (404).
    """
    info = registry.get(req.model_id)
    if info.family not in _DEPLOYABLE:
        raise NotFoundError(f"model '{req.model_id}' is a {info.family} model, not an ensemble or an execution "
                            "network", details={"model_id": req.model_id})
    d = deployments.set(model_id=info.model_id, name=info.name, version=info.version, stage=req.stage,
                        share=req.share, ramp_seconds=req.ramp_seconds)
    return deployment_info(d)


def deployment_list(deployments: DeploymentStore, name: str | None) -> DeploymentList:
    """Every deployed version (optionally of one model name), newest first."""
    return DeploymentList(deployments=[deployment_info(d) for d in deployments.list(name)])


def shadow_log(deployments: DeploymentStore, model_id: str, limit: int) -> ShadowLog:
    """A shadow version's logged answers, newest first (``limit`` clipped to 1..1000).

    Raises:
        NotFoundError: the model has no deployment (404).
    """
    if deployments.get(model_id) is None:
        raise NotFoundError(f"model '{model_id}' has no deployment", details={"model_id": model_id})
    entries = [ShadowEntry(**{k: e[k] for k in ShadowEntry.model_fields})
               for e in deployments.shadow_log(model_id, limit=max(1, min(limit, 1000)))]
    return ShadowLog(model_id=model_id, entries=entries)
