"""Execution family: order size and timing with MC-dropout uncertainty, sampled in one batched pass."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from quantcrew.config.settings import Settings
from quantcrew.ml_server.batching import DynamicBatcher
from quantcrew.ml_server.deps import BatchersDep, DeviceDep, DeviceExecutorDep, MetricsDep, RegistryDep, SettingsDep
from quantcrew.ml_server.errors import InvalidInputError
from quantcrew.ml_server.limits import check_rows
from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.execution import ExecutionRequest, ExecutionResponse

router = APIRouter(prefix="/execution", tags=["execution"], route_class=ORJSONRoute)


def _samples(req: ExecutionRequest, settings: Settings) -> int:
    inf = settings.inference
    n = req.samples if req.samples is not None else inf.execution_samples[req.decision_type]
    if n > inf.max_samples:
        raise InvalidInputError(f"samples={n} is over the server's cap of {inf.max_samples}",
                                details=[{"loc": ["body", "samples"], "msg": f"at most {inf.max_samples}"}])
    return n


@router.post("/plan", response_model=ExecutionResponse, responses=ERROR_RESPONSES)
async def plan(req: ExecutionRequest, settings: SettingsDep, registry: RegistryDep, batchers: BatchersDep,
               metrics: MetricsDep, device: DeviceDep, executor: DeviceExecutorDep) -> Response:
    """Size (fraction of the maximum position) and timing (now / wait) per decision, with MC-dropout intervals."""
    from quantcrew.ml_server.services import execution as service

    if req.data is not None:
        check_rows(req.data, max_rows=settings.server.max_rows)
    samples = _samples(req, settings)
    model_id = await run_in_threadpool(service.resolve_model_id, registry, req.model_id, req.symbol)
    model = await run_in_threadpool(service.load_execution, registry, model_id, device)
    prepared = await run_in_threadpool(service.prepare, req, model,
                                       max_request_batch=settings.inference.max_request_batch)
    if req.seed is not None:
        loop = asyncio.get_running_loop()
        drawn = await loop.run_in_executor(executor, service.sample, model, prepared.x, samples, req.seed)
    else:
        key = f"execution:{model_id}:{samples}"
        batcher = batchers.get(key, lambda: _batcher(key, model, samples, settings, metrics, executor))
        drawn = await batcher.submit(prepared.x)
    return model_response(service.finish(req, model, prepared, drawn, samples))


def _batcher(key: str, model: Any, samples: int, settings: Settings, metrics: Metrics,
             executor: Executor) -> DynamicBatcher[Any, Any]:
    from quantcrew.ml_server.services import execution as service

    inf = settings.inference

    def run(items: list[Any]) -> list[Any]:
        return service.batch_sample(model, items, samples)

    return DynamicBatcher(
        run, name=key, max_batch_size=inf.max_batch_size, max_wait_s=inf.max_wait_ms / 1000.0,
        enabled=inf.batching, size_of=len, executor=executor,
        observe_batch=metrics.batch_size.labels("execution").observe,
        observe_wait=metrics.batch_wait.labels("execution").observe,
    )
