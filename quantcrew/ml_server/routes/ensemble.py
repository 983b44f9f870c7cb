"""Ensemble family: walk-forward training, batched predictions with uncertainty, deployment stages.

Handlers that run a torch model are ``async``: preparation and post-processing run in the
thread pool, and the forward pass waits in the model's dynamic batcher (one device thread),
so concurrent requests share one pass. torch loads on first use, not when the server starts.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from quantcrew.ml_server.batching import check_samples, inference_batcher
from quantcrew.ml_server.deps import (
    BatchersDep,
    DeploymentsDep,
    DeviceDep,
    DeviceExecutorDep,
    JobsDep,
    MetricsDep,
    RegistryDep,
    SettingsDep,
)
from quantcrew.ml_server.errors import NotFoundError
from quantcrew.ml_server.limits import check_matrix, check_rows
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.ensemble import (
    DeploymentInfo,
    DeploymentList,
    DeploymentRequest,
    EnsemblePredictRequest,
    EnsemblePredictResponse,
    EnsembleTrainRequest,
    ShadowEntry,
    ShadowLog,
)
from quantcrew.ml_server.schemas.jobs import JobInfo
from quantcrew.ml_server.services.bars import bars_from_payload

router = APIRouter(prefix="/ensemble", tags=["ensemble"], route_class=ORJSONRoute)


@router.post("/train", response_model=JobInfo, status_code=202, responses=ERROR_RESPONSES)
def train(req: EnsembleTrainRequest, settings: SettingsDep, registry: RegistryDep, jobs: JobsDep,
          deployments: DeploymentsDep, request_device: DeviceDep) -> Response:
    """Start a walk-forward training job; poll ``GET /v1/jobs/{job_id}``.

    Features, labels and folds are checked here, so a series too short for the window,
    horizon and folds is a 422 now, not a failed job later.
    """
    from quantcrew.ml_server.services import ensemble_training as training

    check_rows(req.data, max_rows=settings.server.max_rows)
    bars = bars_from_payload(req.data, min_rows=settings.server.min_rows)
    plan = training.prepare_plan(req, bars, device=request_device, compute_threads=settings.server.compute_threads)
    iso = bars.iso()
    params = {
        "name": plan.name, "symbol": req.symbol, "architectures": list(req.architectures), "members": req.members,
        "window": req.window, "horizon": req.horizon, "folds": len(plan.folds), "scheme": req.scheme,
        "test_start": iso[plan.folds[0].test_start], "n_bars": len(bars), "data_hash": bars.data_hash,
        "seed": req.seed, "stage": req.stage,
    }
    info = jobs.submit("ensemble_train", lambda ctx: training.train_ensemble(plan, registry, deployments, ctx),
                       params=params)
    return model_response(info, status_code=202)


@router.post("/predict", response_model=EnsemblePredictResponse, responses=ERROR_RESPONSES)
async def predict(req: EnsemblePredictRequest, settings: SettingsDep, registry: RegistryDep,
                  deployments: DeploymentsDep, batchers: BatchersDep, metrics: MetricsDep,
                  request_device: DeviceDep, executor: DeviceExecutorDep) -> Response:
    """Signal, calibrated probability and uncertainty metrics from the deployed (or pinned) version.

    A shadow version also runs on the same input; its answer is logged, never returned.
    """
    from quantcrew.ml_server.services import ensemble as service
    from quantcrew.ml_server.services.ensemble_model import is_loaded, load_ensemble

    if req.data is not None:
        check_rows(req.data, max_rows=settings.server.max_rows)
    if req.features is not None:
        check_matrix(req.features, max_rows=settings.server.max_rows, max_columns=settings.server.max_columns,
                     field="features")
    inf = settings.inference
    samples = None if req.method == "ensemble" else check_samples(req.samples or inf.mc_samples, inf.max_samples)
    resolved = service.resolve(req, registry, deployments)  # two indexed SQLite reads: ~0.06 ms

    def stage(model_id: str) -> tuple[Any, Any, Any]:
        # one thread hop per request for everything before the forward pass (each hop costs
        # GIL hand-offs that add up at 64 concurrent clients)
        model = load_ensemble(registry, model_id, request_device)
        prepared = service.prepare(req, model, max_request_batch=inf.max_request_batch)
        return model, prepared, service.rl_source(req, registry)

    async def answer(model_id: str, *, shadows_run: int) -> EnsemblePredictResponse:
        if is_loaded(model_id, request_device) and not service.rl_may_join(req) and req.data is None:
            # a cached model and an already-engineered window: ~0.3 ms of numpy, cheaper inline than
            # the thread hop it would take (measured: hops cost more than the work at 64 clients)
            model, prepared, rl = stage(model_id)
        else:  # loading a model, computing features from bars, or asking an RL policy: off the loop
            model, prepared, rl = await run_in_threadpool(stage, model_id)
        if samples is not None and req.seed is not None:
            # a seeded draw is reproducible only outside a shared batch; it still runs on the device thread
            loop = asyncio.get_running_loop()
            logits = await loop.run_in_executor(executor, model.mc_logits, prepared.windows, samples, req.seed)
        else:
            key = f"ensemble:{model_id}:{samples or 0}"
            run = model.batch_logits if samples is None else partial(model.batch_mc_logits, samples=samples)
            batcher = batchers.get(key, lambda: inference_batcher(run, key=key, family="ensemble", inference=inf,
                                                                  metrics=metrics, executor=executor))
            logits = await batcher.submit(prepared.windows)
        return service.finish(req, model, resolved, prepared, logits, samples=samples, shadows_run=shadows_run,
                              rl=rl)

    reply = await answer(resolved.model_id, shadows_run=len(resolved.shadows))
    for shadow in resolved.shadows:
        try:
            out = await answer(shadow.model_id, shadows_run=0)
        except NotFoundError:
            continue
        await run_in_threadpool(deployments.log_shadow, model_id=shadow.model_id,
                                primary_model_id=resolved.model_id, request_key=resolved.request_key,
                                output=service.shadow_output(out))
    return model_response(reply)


@router.post("/deployments", response_model=DeploymentInfo, responses=ERROR_RESPONSES)
def set_stage(req: DeploymentRequest, registry: RegistryDep, deployments: DeploymentsDep) -> Response:
    """Deploy a stored ensemble version as shadow, canary, gradual or full."""
    from quantcrew.ml_server.services.ensemble_training import deployment_info

    info = registry.get(req.model_id)
    if info.family != "ensemble":
        raise NotFoundError(f"model '{req.model_id}' is a {info.family} model, not an ensemble",
                            details={"model_id": req.model_id})
    d = deployments.set(model_id=info.model_id, name=info.name, version=info.version, stage=req.stage,
                        share=req.share, ramp_seconds=req.ramp_seconds)
    return model_response(deployment_info(d))


@router.get("/deployments", response_model=DeploymentList, responses=ERROR_RESPONSES)
def list_deployments(deployments: DeploymentsDep, name: str | None = None) -> Response:
    """Every deployed version (optionally of one model name), newest first."""
    from quantcrew.ml_server.services.ensemble_training import deployment_info

    return model_response(DeploymentList(deployments=[deployment_info(d) for d in deployments.list(name)]))


@router.get("/deployments/{model_id}/shadow", response_model=ShadowLog, responses=ERROR_RESPONSES)
def shadow_log(model_id: str, deployments: DeploymentsDep, limit: int = 100) -> Response:
    """A shadow version's logged answers, newest first, beside the version that answered."""
    if deployments.get(model_id) is None:
        raise NotFoundError(f"model '{model_id}' has no deployment", details={"model_id": model_id})
    entries = [ShadowEntry(**{k: e[k] for k in ShadowEntry.model_fields})
               for e in deployments.shadow_log(model_id, limit=max(1, min(limit, 1000)))]
    return model_response(ShadowLog(model_id=model_id, entries=entries))
