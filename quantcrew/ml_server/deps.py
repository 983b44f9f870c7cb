"""Typed dependencies shared by the routers.

They are `async def` on purpose: FastAPI runs a sync dependency in a worker thread, and
these only read app state, so a thread hop per dependency would cost more than the work.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Annotated

from fastapi import Depends, Request

from quantcrew.config.settings import Settings
from quantcrew.ml_server.batching import BatcherPool
from quantcrew.ml_server.errors import ModelNotReadyError
from quantcrew.ml_server.inference import InferenceRuntime
from quantcrew.ml_server.jobs import JobManager
from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services.bandit.store import BanditStore
from quantcrew.ml_server.services.deployment import DeploymentStore
from quantcrew.ml_server.services.lifecycle import Lifecycle
from quantcrew.ml_server.services.monitor.alerts import Alerts
from quantcrew.ml_server.services.monitor.outcomes import OutcomeStore
from quantcrew.ml_server.services.monitor.predictions import PredictionLog
from quantcrew.ml_server.services.monitor.quality import LiveQuality
from quantcrew.ml_server.services.monitor.reference import ReferenceStore

__all__ = [
    "AlertsDep",
    "BanditStoreDep",
    "BatchersDep",
    "DeploymentsDep",
    "DeviceDep",
    "DeviceExecutorDep",
    "InferenceDep",
    "JobsDep",
    "LifecycleDep",
    "LiveQualityDep",
    "MetricsDep",
    "OutcomesDep",
    "PredictionLogDep",
    "ReferencesDep",
    "RegistryDep",
    "SettingsDep",
]


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry | None = getattr(request.app.state, "registry", None)
    if registry is None:
        raise ModelNotReadyError("server is starting: the model registry is not open yet")
    return registry


async def get_jobs(request: Request) -> JobManager:
    jobs: JobManager | None = getattr(request.app.state, "jobs", None)
    if jobs is None:
        raise ModelNotReadyError("server is starting: the job manager is not running yet")
    return jobs


async def get_bandit_store(request: Request) -> BanditStore:
    store: BanditStore | None = getattr(request.app.state, "bandits", None)
    if store is None:
        raise ModelNotReadyError("server is starting: the bandit store is not open yet")
    return store


def _state(request: Request, name: str, what: str) -> object:
    value = getattr(request.app.state, name, None)
    if value is None:
        raise ModelNotReadyError(f"server is starting: {what} is not ready yet")
    return value


async def get_deployments(request: Request) -> DeploymentStore:
    store = _state(request, "deployments", "the deployment store")
    assert isinstance(store, DeploymentStore)
    return store


async def get_lifecycle(request: Request) -> Lifecycle:
    lifecycle = _state(request, "lifecycle", "the model lifecycle")
    assert isinstance(lifecycle, Lifecycle)
    return lifecycle


async def get_batchers(request: Request) -> BatcherPool:
    pool = _state(request, "batchers", "the batcher pool")
    assert isinstance(pool, BatcherPool)
    return pool


async def get_device(request: Request) -> str:
    return str(_state(request, "device", "the device"))


async def get_device_executor(request: Request) -> Executor:
    executor = _state(request, "device_executor", "the device thread")
    assert isinstance(executor, Executor)
    return executor


async def get_alerts(request: Request) -> Alerts:
    alerts = _state(request, "alerts", "the alert engine")
    assert isinstance(alerts, Alerts)
    return alerts


async def get_references(request: Request) -> ReferenceStore:
    store = _state(request, "references", "the drift reference store")
    assert isinstance(store, ReferenceStore)
    return store


async def get_prediction_log(request: Request) -> PredictionLog:
    """The prediction log; a disabled one (records nothing) until the lifespan opens it, or when it is off."""
    log = getattr(request.app.state, "predictions", None)
    return log if isinstance(log, PredictionLog) else _NO_LOG


_NO_LOG = PredictionLog.disabled()


async def get_outcomes(request: Request) -> OutcomeStore:
    store = _state(request, "outcomes", "the outcome store")
    assert isinstance(store, OutcomeStore)
    return store


async def get_quality(request: Request) -> LiveQuality:
    quality = _state(request, "quality", "live quality")
    assert isinstance(quality, LiveQuality)
    return quality


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_inference(request: Request) -> InferenceRuntime:
    """The app's device, device thread and batchers, as the torch families' services use them."""
    state = request.app.state
    executor = _state(request, "device_executor", "the device thread")
    pool = _state(request, "batchers", "the batcher pool")
    assert isinstance(executor, Executor) and isinstance(pool, BatcherPool)
    return InferenceRuntime(device=str(_state(request, "device", "the device")), executor=executor, batchers=pool,
                            inference=state.settings.inference, metrics=state.metrics)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
BanditStoreDep = Annotated[BanditStore, Depends(get_bandit_store)]
DeploymentsDep = Annotated[DeploymentStore, Depends(get_deployments)]
LifecycleDep = Annotated[Lifecycle, Depends(get_lifecycle)]
BatchersDep = Annotated[BatcherPool, Depends(get_batchers)]
DeviceDep = Annotated[str, Depends(get_device)]
DeviceExecutorDep = Annotated[Executor, Depends(get_device_executor)]
InferenceDep = Annotated[InferenceRuntime, Depends(get_inference)]
AlertsDep = Annotated[Alerts, Depends(get_alerts)]
ReferencesDep = Annotated[ReferenceStore, Depends(get_references)]
PredictionLogDep = Annotated[PredictionLog, Depends(get_prediction_log)]
OutcomesDep = Annotated[OutcomeStore, Depends(get_outcomes)]
LiveQualityDep = Annotated[LiveQuality, Depends(get_quality)]
