"""Typed HTTP clients for the ML server: ``MLClient`` (sync) and ``AsyncMLClient``.

Both are :class:`quantcrew.tools.exchange.MLClientBase`, which owns everything but I/O:
request building, the retry and circuit-breaker flow, and parsing into the error tree or the
reply's model (its docstring states the retry policy). Each client here only says how a step
of that flow is performed, blocking or awaited, and adds the methods that take no request
body. The endpoints themselves are a table, :mod:`quantcrew.tools.endpoints`.

The HTTP client is injected: ``make_client(settings)`` builds the production one (keep-alive
pool, timeouts, bearer key, User-Agent); tests pass an ``httpx.MockTransport`` client or
Starlette's ``TestClient``. With several server URLs (``client.urls``) one pool serves them all,
each URL has its own circuit breaker, and a call fails over between them as
:mod:`quantcrew.tools.servers` states.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from quantcrew.config.settings import ClientSettings
from quantcrew.ml_server.schemas.alerts import AlertAckRequest, AlertInfo, AlertList, AlertResolveRequest
from quantcrew.ml_server.schemas.bandit import BanditDeleted, BanditList, BanditResetRequest, BanditState
from quantcrew.ml_server.schemas.common import HealthResponse, ModelInfo, ReadyResponse, WireModel
from quantcrew.ml_server.schemas.ensemble import DeploymentList, ShadowLog
from quantcrew.ml_server.schemas.jobs import FINISHED_STATUSES, JobInfo, JobList
from quantcrew.ml_server.schemas.lineage import DeploymentEvent
from quantcrew.ml_server.schemas.monitor import ModelQuality, OutcomeList
from quantcrew.tools import endpoints as ep
from quantcrew.tools.breaker import CircuitBreaker
from quantcrew.tools.endpoints import Endpoint
from quantcrew.tools.exchange import DEFAULT_MAX_BACKOFF_S, DEFAULT_PROBE_TIMEOUT_S, CallInfo, MLClientBase, Send, Wait
from quantcrew.tools.flow import adrive, drive

__all__ = ["AsyncMLClient", "CallInfo", "MLClient", "make_async_client", "make_client"]

_T = TypeVar("_T")


def _job_done(job: JobInfo, started: float, timeout_s: float | None) -> bool:
    """Whether polling stops: the job finished (True), or the deadline passed (TimeoutError)."""
    if job.status in FINISHED_STATUSES:
        return True
    if timeout_s is not None and time.monotonic() - started > timeout_s:
        raise TimeoutError(f"job {job.job_id} is still {job.status} after {timeout_s:g} s "
                           f"({job.progress.done}/{job.progress.total})")
    return False


class MLClient(MLClientBase[httpx.Client]):
    """Blocking client for the ML server; one method per endpoint.

    Args:
        http: The HTTP client to send through; its ``base_url`` is the server's. The
            ``MLClient`` owns it from now on and closes it in ``close``. Starlette's
            ``TestClient`` works too: it subclasses ``httpx2.Client`` (starlette >= 1.x), and
            only ``base_url``, ``build_request``, ``send`` and ``close`` are used.
        retries: Retries of an idempotent call after a retryable fault.
        backoff_s: First backoff; doubled each retry, jittered to 50-100 %.
        breaker: Circuit breaker shared by the calls, or None for none.
        max_backoff_s: Cap on one backoff (and on a server's Retry-After).
        sleep: How to wait between attempts (tests pass a recorder).
        rng: Source of jitter (tests pass a seeded one).
        report_trips: Report the breaker's openings to the server, best effort (``POST /v1/monitor/events``).
        urls: Several servers to fail over between, primary first (:mod:`quantcrew.tools.servers`); requests
            then go to these absolute URLs, not to ``http``'s base URL. None: ``http``'s base URL alone.
        breakers: One breaker per URL of ``urls`` (default: a new ``CircuitBreaker()`` each; ``breaker`` is
            for one server).
        probe_timeout_s: Limit on the ``GET /health`` asked of a recovering server before it gets calls again.

    Raises:
        quantcrew.tools.errors.MLClientError: from every endpoint method; see that module's tree.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        retries: int = 2,
        backoff_s: float = 0.1,
        breaker: CircuitBreaker | None = None,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        report_trips: bool = False,
        urls: Sequence[str] | None = None,
        breakers: Sequence[CircuitBreaker] | None = None,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
    ) -> None:
        super().__init__(
            http, retries=retries, backoff_s=backoff_s, breaker=breaker, max_backoff_s=max_backoff_s, rng=rng,
            report_trips=report_trips, urls=urls, breakers=breakers, probe_timeout_s=probe_timeout_s,
        )
        self._sleep = sleep

    def health(self) -> HealthResponse:
        """Liveness: one attempt, no breaker."""
        return self._call(ep.HEALTH)

    def ready(self) -> ReadyResponse:
        """Readiness: one attempt, no breaker; a server not ready raises ``ModelNotReady``."""
        return self._call(ep.READY)

    def ensemble_deployments(self) -> DeploymentList:
        """Every deployed ensemble version, newest first."""
        return self._call(ep.ENSEMBLE_DEPLOYMENTS)

    def ensemble_shadow_log(self, model_id: str) -> ShadowLog:
        """A shadow version's logged answers, newest first."""
        return self._call(ep.ENSEMBLE_SHADOW_LOG, path_id=model_id)

    def bandit_state(self, bandit: str) -> BanditState:
        """A bandit's state per regime, by id or name; an unknown one raises ``ModelNotFound``."""
        return self._call(ep.BANDIT_STATE, path_id=bandit)

    def bandit_list(self) -> BanditList:
        """Every bandit."""
        return self._call(ep.BANDIT_LIST)

    def bandit_reset(self, bandit: str, regime: str | None = None) -> BanditState:
        """Forget what a bandit learned in ``regime`` (None: every regime); returns its new state."""
        return self._call(ep.BANDIT_RESET, BanditResetRequest(regime=regime), path_id=bandit)

    def bandit_delete(self, bandit: str) -> BanditDeleted:
        """Delete a bandit with its states and decisions; an unknown one raises ``ModelNotFound``."""
        return self._call(ep.BANDIT_DELETE, path_id=bandit)

    def get_job(self, job_id: str) -> JobInfo:
        """A job's status, progress and (once finished) result or error."""
        return self._call(ep.GET_JOB, path_id=job_id)

    def list_jobs(self) -> JobList:
        """The newest jobs."""
        return self._call(ep.LIST_JOBS)

    def cancel_job(self, job_id: str) -> JobInfo:
        """Cancel a queued or running job; a finished one raises ``Conflict`` (409)."""
        return self._call(ep.CANCEL_JOB, path_id=job_id)

    def wait_for_job(self, job_id: str, *, poll_s: float = 0.5, timeout_s: float | None = None,
                     on_progress: Callable[[JobInfo], None] | None = None) -> JobInfo:
        """Poll a job until it finishes; ``on_progress`` sees every poll. Raises TimeoutError."""
        started = time.monotonic()
        while True:
            job = self.get_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if _job_done(job, started, timeout_s):
                return job
            time.sleep(poll_s)

    def list_models(self) -> list[ModelInfo]:
        """Every registry entry."""
        return self._call(ep.LIST_MODELS)

    def models_events(self) -> list[DeploymentEvent]:
        """The latest recorded deployment steps, oldest first."""
        return self._call(ep.MODELS_EVENTS)

    def alerts_list(self) -> AlertList:
        """The server's newest alerts (firing, acknowledged and resolved), newest first."""
        return self._call(ep.ALERTS_LIST)

    def alert_get(self, alert_id: int | str) -> AlertInfo:
        """One alert with its history; an unknown id raises ``NotFound``."""
        return self._call(ep.ALERT_GET, path_id=str(alert_id))

    def alert_ack(self, alert_id: int | str, *, by: str | None = None, note: str | None = None) -> AlertInfo:
        """Acknowledge an alert (it stops escalating); unknown: ``NotFound``, resolved: ``Conflict``."""
        return self._call(ep.ALERT_ACK, AlertAckRequest(by=by, note=note), path_id=str(alert_id))

    def alert_resolve(self, alert_id: int | str, *, by: str | None = None, note: str | None = None) -> AlertInfo:
        """Resolve an alert by hand; an unknown id raises ``NotFound``."""
        return self._call(ep.ALERT_RESOLVE, AlertResolveRequest(by=by, note=note), path_id=str(alert_id))

    def get_model(self, model_id: str) -> ModelInfo:
        """One registry entry; an unknown id raises ``ModelNotFound``."""
        return self._call(ep.GET_MODEL, path_id=model_id)

    def monitor_outcomes_list(self) -> OutcomeList:
        """The newest outcomes the server holds, newest first."""
        return self._call(ep.MONITOR_OUTCOMES_LIST)

    def monitor_model_quality(self, model_id: str) -> ModelQuality:
        """Live quality of one model version over sliding windows; an unknown id raises ``ModelNotFound``."""
        return self._call(ep.MONITOR_MODEL_QUALITY, path_id=model_id)

    def close(self) -> None:
        """Close the HTTP client and its connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, endpoint: Endpoint[Any, _T], body: WireModel | None = None, *, path_id: str | None = None) -> _T:
        return drive(self._exchange(endpoint, body, path_id), self._perform)

    def _perform(self, step: Send | Wait) -> httpx.Response | None:
        if isinstance(step, Wait):
            self._sleep(step.seconds)
            return None
        return self._http.send(step.request)

    def _bind(self, endpoint: Endpoint[Any, Any], *, on_path: bool = False) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            path_id, request = (args[0], args[1] if len(args) > 1 else None) if on_path else (None, args[0])
            return self._call(endpoint, request, path_id=path_id)

        call.__name__ = call.__qualname__ = endpoint.name
        call.__doc__ = endpoint.doc
        return call


class AsyncMLClient(MLClientBase[httpx.AsyncClient]):
    """Asyncio client for the ML server: ``MLClient``'s methods as coroutines.

    Args:
        http: The async HTTP client to send through; owned from now on, closed in ``aclose``.
        retries: Retries of an idempotent call after a retryable fault.
        backoff_s: First backoff; doubled each retry, jittered to 50-100 %.
        breaker: Circuit breaker shared by the calls (thread- and task-safe), or None.
        max_backoff_s: Cap on one backoff (and on a server's Retry-After).
        sleep: How to wait between attempts (tests pass a recorder).
        rng: Source of jitter (tests pass a seeded one).
        report_trips: Report the breaker's openings to the server, best effort (``POST /v1/monitor/events``).
        urls: Several servers to fail over between, primary first (:mod:`quantcrew.tools.servers`); requests
            then go to these absolute URLs, not to ``http``'s base URL. None: ``http``'s base URL alone.
        breakers: One breaker per URL of ``urls`` (default: a new ``CircuitBreaker()`` each; ``breaker`` is
            for one server).
        probe_timeout_s: Limit on the ``GET /health`` asked of a recovering server before it gets calls again.

    Raises:
        quantcrew.tools.errors.MLClientError: from every endpoint method; see that module's tree.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        retries: int = 2,
        backoff_s: float = 0.1,
        breaker: CircuitBreaker | None = None,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        report_trips: bool = False,
        urls: Sequence[str] | None = None,
        breakers: Sequence[CircuitBreaker] | None = None,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
    ) -> None:
        super().__init__(
            http, retries=retries, backoff_s=backoff_s, breaker=breaker, max_backoff_s=max_backoff_s, rng=rng,
            report_trips=report_trips, urls=urls, breakers=breakers, probe_timeout_s=probe_timeout_s,
        )
        self._sleep = sleep

    async def health(self) -> HealthResponse:
        """Liveness: one attempt, no breaker."""
        return await self._call(ep.HEALTH)

    async def ready(self) -> ReadyResponse:
        """Readiness: one attempt, no breaker; a server not ready raises ``ModelNotReady``."""
        return await self._call(ep.READY)

    async def ensemble_deployments(self) -> DeploymentList:
        """Every deployed ensemble version, newest first."""
        return await self._call(ep.ENSEMBLE_DEPLOYMENTS)

    async def ensemble_shadow_log(self, model_id: str) -> ShadowLog:
        """A shadow version's logged answers, newest first."""
        return await self._call(ep.ENSEMBLE_SHADOW_LOG, path_id=model_id)

    async def bandit_state(self, bandit: str) -> BanditState:
        """A bandit's state per regime, by id or name; an unknown one raises ``ModelNotFound``."""
        return await self._call(ep.BANDIT_STATE, path_id=bandit)

    async def bandit_list(self) -> BanditList:
        """Every bandit."""
        return await self._call(ep.BANDIT_LIST)

    async def bandit_reset(self, bandit: str, regime: str | None = None) -> BanditState:
        """Forget what a bandit learned in ``regime`` (None: every regime); returns its new state."""
        return await self._call(ep.BANDIT_RESET, BanditResetRequest(regime=regime), path_id=bandit)

    async def bandit_delete(self, bandit: str) -> BanditDeleted:
        """Delete a bandit with its states and decisions; an unknown one raises ``ModelNotFound``."""
        return await self._call(ep.BANDIT_DELETE, path_id=bandit)

    async def get_job(self, job_id: str) -> JobInfo:
        """A job's status, progress and (once finished) result or error."""
        return await self._call(ep.GET_JOB, path_id=job_id)

    async def list_jobs(self) -> JobList:
        """The newest jobs."""
        return await self._call(ep.LIST_JOBS)

    async def cancel_job(self, job_id: str) -> JobInfo:
        """Cancel a queued or running job; a finished one raises ``Conflict`` (409)."""
        return await self._call(ep.CANCEL_JOB, path_id=job_id)

    async def wait_for_job(self, job_id: str, *, poll_s: float = 0.5, timeout_s: float | None = None,
                           on_progress: Callable[[JobInfo], None] | None = None) -> JobInfo:
        """Poll a job until it finishes; ``on_progress`` sees every poll. Raises TimeoutError."""
        started = time.monotonic()
        while True:
            job = await self.get_job(job_id)
            if on_progress is not None:
                on_progress(job)
            if _job_done(job, started, timeout_s):
                return job
            await asyncio.sleep(poll_s)

    async def list_models(self) -> list[ModelInfo]:
        """Every registry entry."""
        return await self._call(ep.LIST_MODELS)

    async def models_events(self) -> list[DeploymentEvent]:
        """The latest recorded deployment steps, oldest first."""
        return await self._call(ep.MODELS_EVENTS)

    async def alerts_list(self) -> AlertList:
        """The server's newest alerts (firing, acknowledged and resolved), newest first."""
        return await self._call(ep.ALERTS_LIST)

    async def alert_get(self, alert_id: int | str) -> AlertInfo:
        """One alert with its history; an unknown id raises ``NotFound``."""
        return await self._call(ep.ALERT_GET, path_id=str(alert_id))

    async def alert_ack(self, alert_id: int | str, *, by: str | None = None, note: str | None = None) -> AlertInfo:
        """Acknowledge an alert (it stops escalating); unknown: ``NotFound``, resolved: ``Conflict``."""
        return await self._call(ep.ALERT_ACK, AlertAckRequest(by=by, note=note), path_id=str(alert_id))

    async def alert_resolve(self, alert_id: int | str, *, by: str | None = None,
                            note: str | None = None) -> AlertInfo:
        """Resolve an alert by hand; an unknown id raises ``NotFound``."""
        return await self._call(ep.ALERT_RESOLVE, AlertResolveRequest(by=by, note=note), path_id=str(alert_id))

    async def get_model(self, model_id: str) -> ModelInfo:
        """One registry entry; an unknown id raises ``ModelNotFound``."""
        return await self._call(ep.GET_MODEL, path_id=model_id)

    async def monitor_outcomes_list(self) -> OutcomeList:
        """The newest outcomes the server holds, newest first."""
        return await self._call(ep.MONITOR_OUTCOMES_LIST)

    async def monitor_model_quality(self, model_id: str) -> ModelQuality:
        """Live quality of one model version over sliding windows; an unknown id raises ``ModelNotFound``."""
        return await self._call(ep.MONITOR_MODEL_QUALITY, path_id=model_id)

    async def aclose(self) -> None:
        """Close the HTTP client and its connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _call(
        self, endpoint: Endpoint[Any, _T], body: WireModel | None = None, *, path_id: str | None = None
    ) -> _T:
        return await adrive(self._exchange(endpoint, body, path_id), self._perform)

    async def _perform(self, step: Send | Wait) -> httpx.Response | None:
        if isinstance(step, Wait):
            await self._sleep(step.seconds)
            return None
        return await self._http.send(step.request)

    def _bind(self, endpoint: Endpoint[Any, Any], *, on_path: bool = False) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any) -> Any:
            path_id, request = (args[0], args[1] if len(args) > 1 else None) if on_path else (None, args[0])
            return await self._call(endpoint, request, path_id=path_id)

        call.__name__ = call.__qualname__ = endpoint.name
        call.__doc__ = endpoint.doc
        return call


def make_client(
    settings: ClientSettings,
    *,
    base_url: str | None = None,
    breaker: CircuitBreaker | None = None,
    transport: httpx.BaseTransport | None = None,
) -> MLClient:
    """Build the production ``MLClient`` from settings.

    Args:
        settings: Server URL(s), timeouts, pool size, retries, backoff, breaker and API key. With several
            URLs (``settings.server_urls``: ``url`` then ``urls``) the client fails over between them, one
            breaker per URL (:mod:`quantcrew.tools.servers`).
        base_url: Server URL; wins over ``settings.url`` and ``settings.urls`` (the CLI passes the local
            server's).
        breaker: A breaker to share with other clients (one server only); default a new one from settings.
        transport: An httpx transport to send through instead of the network (tests, or
            ``httpx.WSGITransport``); the pool limits then belong to that transport.

    Raises:
        ValueError: no URL is set (neither ``base_url`` nor ``settings.url``/``settings.urls``), or ``breaker``
            is given with several URLs.
    """
    urls = _urls(settings, base_url, breaker)
    http = httpx.Client(transport=transport, **_http_options(settings, urls[0]))
    return MLClient(http, **_client_options(settings, urls, breaker))


def make_async_client(
    settings: ClientSettings,
    *,
    base_url: str | None = None,
    breaker: CircuitBreaker | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> AsyncMLClient:
    """Build the production ``AsyncMLClient`` from settings (arguments as ``make_client``).

    ``transport`` may be an ``httpx.ASGITransport(app)`` to talk to the app in process.

    Raises:
        ValueError: as ``make_client``.
    """
    urls = _urls(settings, base_url, breaker)
    http = httpx.AsyncClient(transport=transport, **_http_options(settings, urls[0]))
    return AsyncMLClient(http, **_client_options(settings, urls, breaker))


def _urls(settings: ClientSettings, base_url: str | None, breaker: CircuitBreaker | None) -> list[str]:
    urls = [base_url] if base_url else settings.server_urls
    if not urls:
        raise ValueError("no ML server URL: set QUANTCREW_CLIENT__URL (client.url) or QUANTCREW_CLIENT__URLS "
                         "(client.urls), or pass base_url")
    if breaker is not None and len(urls) > 1:
        raise ValueError(f"one breaker cannot serve {len(urls)} URLs ({', '.join(urls)}): each has its own, "
                         "built from the settings")
    return urls


def _client_options(settings: ClientSettings, urls: list[str], breaker: CircuitBreaker | None) -> dict[str, Any]:
    options: dict[str, Any] = {"retries": settings.retries, "backoff_s": settings.backoff_s, "report_trips": True}
    if len(urls) == 1:
        options["breaker"] = breaker if breaker is not None else _breaker_from(settings)
    else:
        options.update(urls=urls, breakers=[_breaker_from(settings) for _ in urls],
                       probe_timeout_s=settings.connect_timeout_s)
    return options


def _http_options(settings: ClientSettings, url: str) -> dict[str, Any]:
    headers = {"user-agent": f"quantcrew/{_package_version()}", "accept": "application/json"}
    if settings.api_key is not None:
        headers["authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    return {
        "base_url": url,
        "headers": headers,
        "timeout": httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
        "limits": httpx.Limits(
            max_connections=settings.max_connections, max_keepalive_connections=settings.max_connections
        ),
    }


def _breaker_from(settings: ClientSettings) -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=settings.breaker_failures, reset_timeout_s=settings.breaker_reset_s)


@lru_cache(maxsize=1)
def _package_version() -> str:
    try:
        return version("quantcrew")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"
