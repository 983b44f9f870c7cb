"""The one dependency every route takes: :class:`Server`, the running server's parts.

FastAPI resolves each ``Depends`` of a route again on every request: a nested solve with its own
query, header and cookie parsing, and a cache key that unwraps the getter (measured at 64
concurrent requests: 25-40 us apiece; the ensemble predict spent a tenth of its CPU on its six).
A route therefore takes one parameter, ``server: ServerDep``, and reads the parts it uses as
properties. A part the lifespan has not opened yet raises :class:`ModelNotReadyError` (503) when
the route first reads it, which routes do on their first line.

The getter is ``async``: FastAPI runs a sync dependency in a worker thread, a hop that would cost
more than reading the app's state.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from starlette.datastructures import State

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

__all__ = ["Server", "ServerDep", "get_server"]

_NO_LOG = PredictionLog.disabled()

T = TypeVar("T")


class Server:
    """The parts of the running server a route reads, from the app's state, when it reads them.

    Args:
        state: The app's ``state`` (filled by the lifespan).
    """

    __slots__ = ("_state",)

    def __init__(self, state: State) -> None:
        self._state = state

    def _part(self, name: str, what: str, kind: type[T]) -> T:
        """The state's ``name``, a ``kind``; 503 naming ``what`` while the lifespan has not opened it."""
        value = getattr(self._state, name, None)
        if value is None:
            raise ModelNotReadyError(f"server is starting: {what} is not ready yet")
        assert isinstance(value, kind)
        return value

    @property
    def settings(self) -> Settings:
        settings: Settings = self._state.settings
        return settings

    @property
    def metrics(self) -> Metrics:
        metrics: Metrics = self._state.metrics
        return metrics

    @property
    def registry(self) -> ModelRegistry:
        return self._part("registry", "the model registry", ModelRegistry)

    @property
    def jobs(self) -> JobManager:
        return self._part("jobs", "the job manager", JobManager)

    @property
    def bandits(self) -> BanditStore:
        return self._part("bandits", "the bandit store", BanditStore)

    @property
    def deployments(self) -> DeploymentStore:
        return self._part("deployments", "the deployment store", DeploymentStore)

    @property
    def lifecycle(self) -> Lifecycle:
        return self._part("lifecycle", "the model lifecycle", Lifecycle)

    @property
    def batchers(self) -> BatcherPool:
        return self._part("batchers", "the batcher pool", BatcherPool)

    @property
    def device(self) -> str:
        return self._part("device", "the device", str)

    @property
    def device_or_cpu(self) -> str:
        """The device, or ``cpu`` while it is still being probed (for work that runs fine on the CPU)."""
        device: str | None = getattr(self._state, "device", None)
        return device or "cpu"

    @property
    def device_executor(self) -> Executor:
        return self._part("device_executor", "the device thread", Executor)

    @property
    def alerts(self) -> Alerts:
        return self._part("alerts", "the alert engine", Alerts)

    @property
    def references(self) -> ReferenceStore:
        return self._part("references", "the drift reference store", ReferenceStore)

    @property
    def predictions(self) -> PredictionLog:
        """The prediction log; a disabled one (records nothing) until the lifespan opens it, or when it is off."""
        log = getattr(self._state, "predictions", None)
        return log if isinstance(log, PredictionLog) else _NO_LOG

    @property
    def outcomes(self) -> OutcomeStore:
        return self._part("outcomes", "the outcome store", OutcomeStore)

    @property
    def quality(self) -> LiveQuality:
        return self._part("quality", "live quality", LiveQuality)

    @property
    def inference(self) -> InferenceRuntime:
        """The app's device, device thread and batchers, as the torch families' services use them."""
        return InferenceRuntime(device=self.device, executor=self.device_executor, batchers=self.batchers,
                                inference=self.settings.inference, metrics=self.metrics)


async def get_server(request: Request) -> Server:
    return Server(request.app.state)


ServerDep = Annotated[Server, Depends(get_server)]
