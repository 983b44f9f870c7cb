"""Typed dependencies shared by the routers.

They are `async def` on purpose: FastAPI runs a sync dependency in a worker thread, and
these only read app state, so a thread hop per dependency would cost more than the work.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from quantcrew.config.settings import Settings
from quantcrew.ml_server.errors import ModelNotReadyError
from quantcrew.ml_server.jobs import JobManager
from quantcrew.ml_server.metrics import Metrics
from quantcrew.ml_server.registry import ModelRegistry
from quantcrew.ml_server.services.bandit_store import BanditStore

__all__ = ["BanditStoreDep", "JobsDep", "MetricsDep", "RegistryDep", "SettingsDep"]


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


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
BanditStoreDep = Annotated[BanditStore, Depends(get_bandit_store)]
