"""Execution family: order size and timing with MC-dropout uncertainty, sampled in one batched pass."""

from __future__ import annotations

import asyncio
from functools import partial

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from quantcrew.ml_server.batching import check_samples, inference_batcher
from quantcrew.ml_server.deps import BatchersDep, DeviceDep, DeviceExecutorDep, MetricsDep, RegistryDep, SettingsDep
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.execution import ExecutionRequest, ExecutionResponse

router = APIRouter(prefix="/execution", tags=["execution"], route_class=ORJSONRoute)


@router.post("/plan", response_model=ExecutionResponse, responses=ERROR_RESPONSES)
async def plan(req: ExecutionRequest, settings: SettingsDep, registry: RegistryDep, batchers: BatchersDep,
               metrics: MetricsDep, device: DeviceDep, executor: DeviceExecutorDep) -> Response:
    """Size (fraction of the maximum position) and timing (now / wait) per decision, with MC-dropout intervals."""
    from quantcrew.ml_server.services import execution as service

    if req.data is not None:
        check_rows(req.data, max_rows=settings.server.max_rows)
    inf = settings.inference
    samples = check_samples(req.samples or inf.execution_samples[req.decision_type], inf.max_samples)
    model_id = await run_in_threadpool(service.resolve_model_id, registry, req.model_id, req.symbol)
    model = await run_in_threadpool(service.load_execution, registry, model_id, device)
    prepared = await run_in_threadpool(service.prepare, req, model,
                                       max_request_batch=settings.inference.max_request_batch)
    if req.seed is not None:
        loop = asyncio.get_running_loop()
        drawn = await loop.run_in_executor(executor, service.sample, model, prepared.x, samples, req.seed)
    else:
        key = f"execution:{model_id}:{samples}"
        run = partial(service.batch_sample, model, samples=samples)
        batcher = batchers.get(key, lambda: inference_batcher(run, key=key, family="execution", inference=inf,
                                                              metrics=metrics, executor=executor))
        drawn = await batcher.submit(prepared.x)
    return model_response(service.finish(req, model, prepared, drawn, samples))

