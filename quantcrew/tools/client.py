"""Typed HTTP clients for the ML server: ``MLClient`` (sync) and ``AsyncMLClient``.

Both share ``_MLClientBase``, which owns everything but I/O: the endpoint table, request
building, response parsing into the error tree (``quantcrew.tools.errors``) or the reply's
pydantic model, the retry policy and the circuit-breaker bookkeeping. Each subclass adds one
``_call`` loop that sends and sleeps, sync or async, and one thin method per endpoint.

Retries: only for idempotent endpoints (``regime_fit`` creates a registry version and is
never retried), only after a retryable fault (unavailable, timeout, 503 not ready; never a
4xx, another 5xx or an open breaker), at most ``retries`` times, with exponential backoff
and jitter. Every attempt passes through the breaker; a retry is not made once it has opened.
The probes ``health`` and ``ready`` make one attempt and bypass the breaker: they exist to
ask "is it up now?", and an open breaker must not hide the answer.

The HTTP client is injected: ``make_client(settings)`` builds the production one (keep-alive
pool, timeouts, bearer key, User-Agent); tests pass an ``httpx.MockTransport`` client or
Starlette's ``TestClient``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload
from urllib.parse import quote

import httpx
from pydantic import TypeAdapter, ValidationError

from quantcrew.config.settings import ClientSettings
from quantcrew.ml_server.schemas.anomaly import (
    AnomalyFitRequest,
    AnomalyFitResponse,
    AnomalyRequest,
    AnomalyResponse,
    AnomalyScoreRequest,
)
from quantcrew.ml_server.schemas.bandit import (
    BanditCreateRequest,
    BanditDecision,
    BanditInfo,
    BanditList,
    BanditRewardRequest,
    BanditRewardResponse,
    BanditSelectRequest,
    BanditSimulateRequest,
    BanditSimulateResponse,
    BanditState,
)
from quantcrew.ml_server.schemas.cluster import (
    ClusterFitRequest,
    ClusterFitResponse,
    ClusterPredictRequest,
    ClusterPredictResponse,
    ClusterRequest,
    ClusterResponse,
)
from quantcrew.ml_server.schemas.common import HealthResponse, ModelInfo, ReadyResponse, WireModel
from quantcrew.ml_server.schemas.decompose import (
    DecomposeFitRequest,
    DecomposeFitResponse,
    DecomposeRequest,
    DecomposeResponse,
    DecomposeTransformRequest,
    DecomposeTransformResponse,
)
from quantcrew.ml_server.schemas.ensemble import (
    DeploymentInfo,
    DeploymentList,
    DeploymentRequest,
    EnsemblePredictRequest,
    EnsemblePredictResponse,
    EnsembleTrainRequest,
    ShadowLog,
)
from quantcrew.ml_server.schemas.execution import ExecutionRequest, ExecutionResponse
from quantcrew.ml_server.schemas.jobs import FINISHED_STATUSES, JobInfo, JobList
from quantcrew.ml_server.schemas.regime import (
    RegimeFitRequest,
    RegimeFitResponse,
    RegimeLabelRequest,
    RegimeLabelResponse,
    RegimePredictRequest,
)
from quantcrew.ml_server.schemas.risk import CovarianceRequest, CovarianceResponse, VarRequest, VarResponse
from quantcrew.ml_server.schemas.risk_backtest import VarBacktestRequest, VarBacktestResponse
from quantcrew.ml_server.schemas.rl import (
    RLActRequest,
    RLActResponse,
    RLEvaluateRequest,
    RLEvaluateResponse,
    RLTrainRequest,
)
from quantcrew.ml_server.schemas.supervised import (
    SupervisedAnalyzeRequest,
    SupervisedFitRequest,
    SupervisedFitResponse,
    SupervisedPredictRequest,
    SupervisedPredictResponse,
)
from quantcrew.tools.breaker import BreakerState, CircuitBreaker
from quantcrew.tools.errors import (
    MLClientError,
    MLResponseError,
    MLServerFault,
    error_from_response,
    map_transport_errors,
)

__all__ = ["AsyncMLClient", "CallInfo", "MLClient", "make_async_client", "make_client"]

_T = TypeVar("_T")
_Req = TypeVar("_Req", bound=WireModel)
_H = TypeVar("_H", httpx.Client, httpx.AsyncClient)

_JSON_HEADERS = {"content-type": "application/json"}
_DEFAULT_MAX_BACKOFF_S = 5.0


@dataclass(frozen=True, slots=True)
class _Endpoint(Generic[_Req, _T]):
    """One row of the endpoint table."""

    name: str
    method: str
    path: str  # may hold an {id} placeholder (a model, job or bandit id)
    request_type: type[_Req] | None
    parse: Callable[[bytes], _T]  # the response type's JSON validator
    idempotent: bool  # may be retried after a retryable fault
    probe: bool = False  # one attempt, no breaker
    doc: str = ""  # the client method's docstring


_MODEL_LIST: TypeAdapter[list[ModelInfo]] = TypeAdapter(list[ModelInfo])

_HEALTH: _Endpoint[WireModel, HealthResponse] = _Endpoint(
    "health", "GET", "/health", None, HealthResponse.model_validate_json, True, probe=True
)
_READY: _Endpoint[WireModel, ReadyResponse] = _Endpoint(
    "ready", "GET", "/ready", None, ReadyResponse.model_validate_json, True, probe=True
)
_LIST_MODELS: _Endpoint[WireModel, list[ModelInfo]] = _Endpoint(
    "list_models", "GET", "/v1/models", None, _MODEL_LIST.validate_json, True
)
_GET_MODEL: _Endpoint[WireModel, ModelInfo] = _Endpoint(
    "get_model", "GET", "/v1/models/{id}", None, ModelInfo.model_validate_json, True
)


def _post(name: str, path: str, request_type: type[_Req], response_type: type[_T], doc: str, *,
          idempotent: bool = True) -> _Endpoint[_Req, _T]:
    parse: Callable[[bytes], _T] = response_type.model_validate_json  # type: ignore[attr-defined]
    return _Endpoint(name, "POST", path, request_type, parse, idempotent, doc=doc)


_REGIME_LABEL = _post("regime_label", "/v1/regime/label", RegimeLabelRequest, RegimeLabelResponse,
                      "Fit an HMM on the bars and label each one (stateless; retried).")
_REGIME_FIT = _post("regime_fit", "/v1/regime/fit", RegimeFitRequest, RegimeFitResponse,
                    "Fit an HMM and store it as a new registry version (never retried).", idempotent=False)
_REGIME_PREDICT = _post("regime_predict", "/v1/regime/predict", RegimePredictRequest, RegimeLabelResponse,
                        "Label bars with a stored model (retried).")
_RISK_COVARIANCE = _post("risk_covariance", "/v1/risk/covariance", CovarianceRequest, CovarianceResponse,
                         "Sample, Ledoit-Wolf, OAS or constant-correlation covariance of returns (stateless).")
_RISK_VAR = _post("risk_var", "/v1/risk/var", VarRequest, VarResponse,
                  "Portfolio VaR and CVaR by the requested methods (stateless; retried).")
_RISK_BACKTEST = _post("risk_backtest", "/v1/risk/backtest", VarBacktestRequest, VarBacktestResponse,
                       "Rolling out-of-sample VaR with Kupiec and Christoffersen tests (stateless; retried).")
_DECOMPOSE_ANALYZE = _post("decompose_analyze", "/v1/decompose/analyze", DecomposeRequest, DecomposeResponse,
                           "PCA / FastICA / NMF of a returns matrix (stateless; retried).")
_DECOMPOSE_FIT = _post("decompose_fit", "/v1/decompose/fit", DecomposeFitRequest, DecomposeFitResponse,
                       "Fit a decomposition and store it (never retried).", idempotent=False)
_DECOMPOSE_TRANSFORM = _post("decompose_transform", "/v1/decompose/transform", DecomposeTransformRequest,
                             DecomposeTransformResponse, "Factor scores of new rows from a stored decomposition.")
_CLUSTER_ANALYZE = _post("cluster_analyze", "/v1/cluster/analyze", ClusterRequest, ClusterResponse,
                         "KMeans / DBSCAN / Gaussian-mixture clusters of rows or assets (stateless; retried).")
_CLUSTER_FIT = _post("cluster_fit", "/v1/cluster/fit", ClusterFitRequest, ClusterFitResponse,
                     "Fit a clustering of rows and store it (never retried).", idempotent=False)
_CLUSTER_PREDICT = _post("cluster_predict", "/v1/cluster/predict", ClusterPredictRequest, ClusterPredictResponse,
                         "Cluster labels of new rows from a stored model.")
_ANOMALY_DETECT = _post("anomaly_detect", "/v1/anomaly/detect", AnomalyRequest, AnomalyResponse,
                        "IsolationForest anomaly scores of OHLCV bars (stateless; retried).")
_ANOMALY_FIT = _post("anomaly_fit", "/v1/anomaly/fit", AnomalyFitRequest, AnomalyFitResponse,
                     "Fit an anomaly model on bars and store it (never retried).", idempotent=False)
_ANOMALY_SCORE = _post("anomaly_score", "/v1/anomaly/score", AnomalyScoreRequest, AnomalyResponse,
                       "Score new bars with a stored anomaly model.")
_SUPERVISED_ANALYZE = _post("supervised_analyze", "/v1/supervised/analyze", SupervisedAnalyzeRequest,
                            SupervisedFitResponse, "Fit, evaluate on a chronological holdout and predict (stateless).")
_SUPERVISED_FIT = _post("supervised_fit", "/v1/supervised/fit", SupervisedFitRequest, SupervisedFitResponse,
                        "Fit a supervised model and store it (never retried).", idempotent=False)
_SUPERVISED_PREDICT = _post("supervised_predict", "/v1/supervised/predict", SupervisedPredictRequest,
                            SupervisedPredictResponse, "Predictions of a stored supervised model.")


_RL_TRAIN = _post("rl_train", "/v1/rl/train", RLTrainRequest, JobInfo,
                  "Start training specialized agents; returns the job (never retried).", idempotent=False)
_RL_ACT = _post("rl_act", "/v1/rl/act", RLActRequest, RLActResponse,
                "Each selected policy's action at the last bar.")
_RL_EVALUATE = _post("rl_evaluate", "/v1/rl/evaluate", RLEvaluateRequest, RLEvaluateResponse,
                     "Out-of-sample backtest of stored policies beside buy-and-hold and flat.")
_BANDIT_CREATE = _post("bandit_create", "/v1/bandit", BanditCreateRequest, BanditInfo,
                       "Create a bandit (one per regime inside); never retried.", idempotent=False)
_BANDIT_SELECT = _post("bandit_select", "/v1/bandit/select", BanditSelectRequest, BanditDecision,
                       "Choose an arm for a regime; records a decision (never retried).", idempotent=False)
_BANDIT_REWARD = _post("bandit_reward", "/v1/bandit/reward", BanditRewardRequest, BanditRewardResponse,
                       "Record the reward of a past decision (never retried).", idempotent=False)
_BANDIT_SIMULATE = _post("bandit_simulate", "/v1/bandit/simulate", BanditSimulateRequest, BanditSimulateResponse,
                         "Simulate a policy on arms whose means are known; reports regret.")
_ENSEMBLE_TRAIN = _post("ensemble_train", "/v1/ensemble/train", EnsembleTrainRequest, JobInfo,
                        "Start walk-forward training of the ensemble (and execution network); returns the job "
                        "(never retried).", idempotent=False)
_ENSEMBLE_PREDICT = _post("ensemble_predict", "/v1/ensemble/predict", EnsemblePredictRequest,
                          EnsemblePredictResponse,
                          "Signal, calibrated confidence and uncertainty metrics from the deployed ensemble.")
_ENSEMBLE_DEPLOY = _post("ensemble_deploy", "/v1/ensemble/deployments", DeploymentRequest, DeploymentInfo,
                         "Set a stored ensemble version's stage: shadow, canary, gradual or full (never retried).",
                         idempotent=False)
_EXECUTION_PLAN = _post("execution_plan", "/v1/execution/plan", ExecutionRequest, ExecutionResponse,
                        "Order size and timing with MC-dropout intervals, per decision.")
_ENSEMBLE_DEPLOYMENTS: _Endpoint[WireModel, DeploymentList] = _Endpoint(
    "ensemble_deployments", "GET", "/v1/ensemble/deployments", None, DeploymentList.model_validate_json, True
)
_ENSEMBLE_SHADOW_LOG: _Endpoint[WireModel, ShadowLog] = _Endpoint(
    "ensemble_shadow_log", "GET", "/v1/ensemble/deployments/{id}/shadow", None, ShadowLog.model_validate_json, True
)
_GET_JOB: _Endpoint[WireModel, JobInfo] = _Endpoint(
    "get_job", "GET", "/v1/jobs/{id}", None, JobInfo.model_validate_json, True
)
_LIST_JOBS: _Endpoint[WireModel, JobList] = _Endpoint(
    "list_jobs", "GET", "/v1/jobs", None, JobList.model_validate_json, True
)
_CANCEL_JOB: _Endpoint[WireModel, JobInfo] = _Endpoint(
    "cancel_job", "DELETE", "/v1/jobs/{id}", None, JobInfo.model_validate_json, False
)
_BANDIT_STATE: _Endpoint[WireModel, BanditState] = _Endpoint(
    "bandit_state", "GET", "/v1/bandit/{id}", None, BanditState.model_validate_json, True
)
_BANDIT_LIST: _Endpoint[WireModel, BanditList] = _Endpoint(
    "bandit_list", "GET", "/v1/bandit", None, BanditList.model_validate_json, True
)


def _job_done(job: JobInfo, started: float, timeout_s: float | None) -> bool:
    """Whether polling stops: the job finished (True), or the deadline passed (TimeoutError)."""
    if job.status in FINISHED_STATUSES:
        return True
    if timeout_s is not None and time.monotonic() - started > timeout_s:
        raise TimeoutError(f"job {job.job_id} is still {job.status} after {timeout_s:g} s "
                           f"({job.progress.done}/{job.progress.total})")
    return False


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the last call on a client did, for a tool's metadata.

    Attributes:
        endpoint: Endpoint name, e.g. ``"regime_label"``.
        attempts: Requests sent (0 when the breaker refused the call).
        elapsed_ms: Wall time of the whole call, retries and backoff included.
        status_code: Status of the last reply, or None when there was none.
        ok: Whether the call returned a result.
    """

    endpoint: str
    attempts: int
    elapsed_ms: float
    status_code: int | None
    ok: bool


class _MLClientBase(Generic[_H]):
    """Everything the sync and async clients share: building, parsing, retrying, breaking."""

    def __init__(
        self,
        http: _H,
        *,
        retries: int,
        backoff_s: float,
        breaker: CircuitBreaker | None,
        max_backoff_s: float,
        rng: random.Random | None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff_s < 0 or max_backoff_s < 0:
            raise ValueError(f"backoff_s and max_backoff_s must be >= 0, got {backoff_s} and {max_backoff_s}")
        self._http: _H = http
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.breaker = breaker
        self._rng = rng if rng is not None else random.Random()
        self.last_call: CallInfo | None = None

    @property
    def base_url(self) -> httpx.URL:
        """The server's base URL, from the injected HTTP client."""
        return self._http.base_url

    @property
    def last_call_ms(self) -> float | None:
        """Wall time of the last call in milliseconds (last writer wins under concurrency)."""
        return self.last_call.elapsed_ms if self.last_call is not None else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={str(self.base_url)!r}, retries={self.retries})"

    def _build_request(
        self, endpoint: _Endpoint[Any, Any], body: WireModel | None, path_id: str | None
    ) -> httpx.Request:
        if endpoint.request_type is not None and type(body) is not endpoint.request_type:
            raise TypeError(f"{endpoint.name} takes a {endpoint.request_type.__name__}, got {type(body).__name__}")
        path = endpoint.path
        if path_id is not None:
            if not path_id:
                raise ValueError(f"{endpoint.name}: the id must not be empty")
            path = path.format(id=quote(path_id, safe=""))
        if body is None:
            return self._http.build_request(endpoint.method, path)
        return self._http.build_request(
            endpoint.method, path, content=body.model_dump_json().encode(), headers=_JSON_HEADERS
        )

    def _guard(self, endpoint: _Endpoint[Any, Any]) -> AbstractContextManager[None]:
        if self.breaker is None or endpoint.probe:
            return nullcontext()
        return self.breaker.guard()

    @staticmethod
    def _parse(endpoint: _Endpoint[Any, _T], response: httpx.Response) -> _T:
        if not response.is_success:
            raise error_from_response(response)
        try:
            return endpoint.parse(response.content)
        except ValidationError as exc:
            raise MLServerFault(
                f"the reply of {endpoint.name} does not match the wire contract: {exc.error_count()} errors, "
                f"first: {_first_error(exc)}",
                status_code=response.status_code,
                code="invalid_response",
                details=exc.errors(include_url=False, include_input=False),
                endpoint=f"{endpoint.method} {endpoint.path}",
            ) from exc

    def _retry_delay(self, endpoint: _Endpoint[Any, Any], exc: MLClientError, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up and raise ``exc``."""
        if not (endpoint.idempotent and not endpoint.probe and exc.retryable and attempt < self.retries):
            return None
        if self.breaker is not None and self.breaker.state is BreakerState.OPEN:
            return None  # the next attempt would only be refused; report the real fault instead
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        delay = ceiling * self._rng.uniform(0.5, 1.0)  # jitter keeps clients from retrying in step
        if isinstance(exc, MLResponseError) and exc.retry_after_s is not None:  # the server said when
            delay = min(max(delay, exc.retry_after_s), self.max_backoff_s)
        return delay

    def _record(
        self, endpoint: _Endpoint[Any, Any], attempts: int, started: float, status: int | None, ok: bool
    ) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self.last_call = CallInfo(endpoint.name, attempts, elapsed_ms, status, ok)


class _SyncPost(Generic[_Req, _T]):
    """A POST endpoint as a method of :class:`MLClient`: ``client.risk_var(request) -> VarResponse``."""

    def __init__(self, endpoint: _Endpoint[_Req, _T]) -> None:
        self.endpoint = endpoint
        self.__doc__ = endpoint.doc

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> _SyncPost[_Req, _T]: ...
    @overload
    def __get__(self, obj: MLClient, owner: type[Any] | None = None) -> Callable[[_Req], _T]: ...
    def __get__(self, obj: MLClient | None, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        endpoint = self.endpoint

        def call(request: _Req) -> _T:
            return obj._call(endpoint, request)

        call.__name__ = call.__qualname__ = endpoint.name
        call.__doc__ = endpoint.doc
        return call


class _AsyncPost(Generic[_Req, _T]):
    """A POST endpoint as a coroutine method of :class:`AsyncMLClient`."""

    def __init__(self, endpoint: _Endpoint[_Req, _T]) -> None:
        self.endpoint = endpoint
        self.__doc__ = endpoint.doc

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> _AsyncPost[_Req, _T]: ...
    @overload
    def __get__(self, obj: AsyncMLClient, owner: type[Any] | None = None) -> Callable[[_Req], Awaitable[_T]]: ...
    def __get__(self, obj: AsyncMLClient | None, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        endpoint = self.endpoint

        async def call(request: _Req) -> _T:
            return await obj._call(endpoint, request)

        call.__name__ = call.__qualname__ = endpoint.name
        call.__doc__ = endpoint.doc
        return call


class MLClient(_MLClientBase[httpx.Client]):
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
        max_backoff_s: float = _DEFAULT_MAX_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            http, retries=retries, backoff_s=backoff_s, breaker=breaker, max_backoff_s=max_backoff_s, rng=rng
        )
        self._sleep = sleep

    def health(self) -> HealthResponse:
        """Liveness: one attempt, no breaker."""
        return self._call(_HEALTH)

    def ready(self) -> ReadyResponse:
        """Readiness: one attempt, no breaker; a server not ready raises ``ModelNotReady``."""
        return self._call(_READY)

    regime_label = _SyncPost(_REGIME_LABEL)
    regime_fit = _SyncPost(_REGIME_FIT)
    regime_predict = _SyncPost(_REGIME_PREDICT)
    risk_covariance = _SyncPost(_RISK_COVARIANCE)
    risk_var = _SyncPost(_RISK_VAR)
    risk_backtest = _SyncPost(_RISK_BACKTEST)
    decompose_analyze = _SyncPost(_DECOMPOSE_ANALYZE)
    decompose_fit = _SyncPost(_DECOMPOSE_FIT)
    decompose_transform = _SyncPost(_DECOMPOSE_TRANSFORM)
    cluster_analyze = _SyncPost(_CLUSTER_ANALYZE)
    cluster_fit = _SyncPost(_CLUSTER_FIT)
    cluster_predict = _SyncPost(_CLUSTER_PREDICT)
    anomaly_detect = _SyncPost(_ANOMALY_DETECT)
    anomaly_fit = _SyncPost(_ANOMALY_FIT)
    anomaly_score = _SyncPost(_ANOMALY_SCORE)
    supervised_analyze = _SyncPost(_SUPERVISED_ANALYZE)
    supervised_fit = _SyncPost(_SUPERVISED_FIT)
    supervised_predict = _SyncPost(_SUPERVISED_PREDICT)
    rl_train = _SyncPost(_RL_TRAIN)
    rl_act = _SyncPost(_RL_ACT)
    rl_evaluate = _SyncPost(_RL_EVALUATE)
    bandit_create = _SyncPost(_BANDIT_CREATE)
    bandit_select = _SyncPost(_BANDIT_SELECT)
    bandit_reward = _SyncPost(_BANDIT_REWARD)
    bandit_simulate = _SyncPost(_BANDIT_SIMULATE)
    ensemble_train = _SyncPost(_ENSEMBLE_TRAIN)
    ensemble_predict = _SyncPost(_ENSEMBLE_PREDICT)
    ensemble_deploy = _SyncPost(_ENSEMBLE_DEPLOY)
    execution_plan = _SyncPost(_EXECUTION_PLAN)

    def ensemble_deployments(self) -> DeploymentList:
        """Every deployed ensemble version, newest first."""
        return self._call(_ENSEMBLE_DEPLOYMENTS)

    def ensemble_shadow_log(self, model_id: str) -> ShadowLog:
        """A shadow version's logged answers, newest first."""
        return self._call(_ENSEMBLE_SHADOW_LOG, path_id=model_id)

    def bandit_state(self, bandit: str) -> BanditState:
        """A bandit's state per regime, by id or name; an unknown one raises ``ModelNotFound``."""
        return self._call(_BANDIT_STATE, path_id=bandit)

    def bandit_list(self) -> BanditList:
        """Every bandit."""
        return self._call(_BANDIT_LIST)

    def get_job(self, job_id: str) -> JobInfo:
        """A job's status, progress and (once finished) result or error."""
        return self._call(_GET_JOB, path_id=job_id)

    def list_jobs(self) -> JobList:
        """The newest jobs."""
        return self._call(_LIST_JOBS)

    def cancel_job(self, job_id: str) -> JobInfo:
        """Cancel a queued or running job; a finished one raises ``Conflict`` (409)."""
        return self._call(_CANCEL_JOB, path_id=job_id)

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
        return self._call(_LIST_MODELS)

    def get_model(self, model_id: str) -> ModelInfo:
        """One registry entry; an unknown id raises ``ModelNotFound``."""
        return self._call(_GET_MODEL, path_id=model_id)

    def close(self) -> None:
        """Close the HTTP client and its connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, endpoint: _Endpoint[Any, _T], body: WireModel | None = None, *, path_id: str | None = None) -> _T:
        request = self._build_request(endpoint, body, path_id)
        started = time.perf_counter()
        attempts, status = 0, None
        try:
            while True:
                try:
                    with self._guard(endpoint):
                        attempts += 1
                        with map_transport_errors():
                            response = self._http.send(request)
                        status = response.status_code
                        result = self._parse(endpoint, response)
                except MLClientError as exc:
                    delay = self._retry_delay(endpoint, exc, attempts - 1)
                    if delay is None:
                        raise
                    self._sleep(delay)
                    continue
                self._record(endpoint, attempts, started, status, True)
                return result
        except BaseException:
            self._record(endpoint, attempts, started, status, False)
            raise


class AsyncMLClient(_MLClientBase[httpx.AsyncClient]):
    """Asyncio client for the ML server: ``MLClient``'s methods as coroutines.

    Args:
        http: The async HTTP client to send through; owned from now on, closed in ``aclose``.
        retries: Retries of an idempotent call after a retryable fault.
        backoff_s: First backoff; doubled each retry, jittered to 50-100 %.
        breaker: Circuit breaker shared by the calls (thread- and task-safe), or None.
        max_backoff_s: Cap on one backoff (and on a server's Retry-After).
        sleep: How to wait between attempts (tests pass a recorder).
        rng: Source of jitter (tests pass a seeded one).

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
        max_backoff_s: float = _DEFAULT_MAX_BACKOFF_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            http, retries=retries, backoff_s=backoff_s, breaker=breaker, max_backoff_s=max_backoff_s, rng=rng
        )
        self._sleep = sleep

    async def health(self) -> HealthResponse:
        """Liveness: one attempt, no breaker."""
        return await self._call(_HEALTH)

    async def ready(self) -> ReadyResponse:
        """Readiness: one attempt, no breaker; a server not ready raises ``ModelNotReady``."""
        return await self._call(_READY)

    regime_label = _AsyncPost(_REGIME_LABEL)
    regime_fit = _AsyncPost(_REGIME_FIT)
    regime_predict = _AsyncPost(_REGIME_PREDICT)
    risk_covariance = _AsyncPost(_RISK_COVARIANCE)
    risk_var = _AsyncPost(_RISK_VAR)
    risk_backtest = _AsyncPost(_RISK_BACKTEST)
    decompose_analyze = _AsyncPost(_DECOMPOSE_ANALYZE)
    decompose_fit = _AsyncPost(_DECOMPOSE_FIT)
    decompose_transform = _AsyncPost(_DECOMPOSE_TRANSFORM)
    cluster_analyze = _AsyncPost(_CLUSTER_ANALYZE)
    cluster_fit = _AsyncPost(_CLUSTER_FIT)
    cluster_predict = _AsyncPost(_CLUSTER_PREDICT)
    anomaly_detect = _AsyncPost(_ANOMALY_DETECT)
    anomaly_fit = _AsyncPost(_ANOMALY_FIT)
    anomaly_score = _AsyncPost(_ANOMALY_SCORE)
    supervised_analyze = _AsyncPost(_SUPERVISED_ANALYZE)
    supervised_fit = _AsyncPost(_SUPERVISED_FIT)
    supervised_predict = _AsyncPost(_SUPERVISED_PREDICT)
    rl_train = _AsyncPost(_RL_TRAIN)
    rl_act = _AsyncPost(_RL_ACT)
    rl_evaluate = _AsyncPost(_RL_EVALUATE)
    bandit_create = _AsyncPost(_BANDIT_CREATE)
    bandit_select = _AsyncPost(_BANDIT_SELECT)
    bandit_reward = _AsyncPost(_BANDIT_REWARD)
    bandit_simulate = _AsyncPost(_BANDIT_SIMULATE)
    ensemble_train = _AsyncPost(_ENSEMBLE_TRAIN)
    ensemble_predict = _AsyncPost(_ENSEMBLE_PREDICT)
    ensemble_deploy = _AsyncPost(_ENSEMBLE_DEPLOY)
    execution_plan = _AsyncPost(_EXECUTION_PLAN)

    async def ensemble_deployments(self) -> DeploymentList:
        """Every deployed ensemble version, newest first."""
        return await self._call(_ENSEMBLE_DEPLOYMENTS)

    async def ensemble_shadow_log(self, model_id: str) -> ShadowLog:
        """A shadow version's logged answers, newest first."""
        return await self._call(_ENSEMBLE_SHADOW_LOG, path_id=model_id)

    async def bandit_state(self, bandit: str) -> BanditState:
        """A bandit's state per regime, by id or name; an unknown one raises ``ModelNotFound``."""
        return await self._call(_BANDIT_STATE, path_id=bandit)

    async def bandit_list(self) -> BanditList:
        """Every bandit."""
        return await self._call(_BANDIT_LIST)

    async def get_job(self, job_id: str) -> JobInfo:
        """A job's status, progress and (once finished) result or error."""
        return await self._call(_GET_JOB, path_id=job_id)

    async def list_jobs(self) -> JobList:
        """The newest jobs."""
        return await self._call(_LIST_JOBS)

    async def cancel_job(self, job_id: str) -> JobInfo:
        """Cancel a queued or running job; a finished one raises ``Conflict`` (409)."""
        return await self._call(_CANCEL_JOB, path_id=job_id)

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
        return await self._call(_LIST_MODELS)

    async def get_model(self, model_id: str) -> ModelInfo:
        """One registry entry; an unknown id raises ``ModelNotFound``."""
        return await self._call(_GET_MODEL, path_id=model_id)

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
        self, endpoint: _Endpoint[Any, _T], body: WireModel | None = None, *, path_id: str | None = None
    ) -> _T:
        request = self._build_request(endpoint, body, path_id)
        started = time.perf_counter()
        attempts, status = 0, None
        try:
            while True:
                try:
                    with self._guard(endpoint):
                        attempts += 1
                        with map_transport_errors():
                            response = await self._http.send(request)
                        status = response.status_code
                        result = self._parse(endpoint, response)
                except MLClientError as exc:
                    delay = self._retry_delay(endpoint, exc, attempts - 1)
                    if delay is None:
                        raise
                    await self._sleep(delay)
                    continue
                self._record(endpoint, attempts, started, status, True)
                return result
        except BaseException:
            self._record(endpoint, attempts, started, status, False)
            raise


def make_client(
    settings: ClientSettings,
    *,
    base_url: str | None = None,
    breaker: CircuitBreaker | None = None,
    transport: httpx.BaseTransport | None = None,
) -> MLClient:
    """Build the production ``MLClient`` from settings.

    Args:
        settings: Timeouts, pool size, retries, backoff, breaker and API key.
        base_url: Server URL; wins over ``settings.url`` (the CLI passes the local server's).
        breaker: A breaker to share with other clients; default a new one from settings.
        transport: An httpx transport to send through instead of the network (tests, or
            ``httpx.WSGITransport``); the pool limits then belong to that transport.

    Raises:
        ValueError: neither ``base_url`` nor ``settings.url`` is set.
    """
    http = httpx.Client(transport=transport, **_http_options(settings, base_url))
    return MLClient(
        http,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        breaker=breaker if breaker is not None else _breaker_from(settings),
    )


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
        ValueError: neither ``base_url`` nor ``settings.url`` is set.
    """
    http = httpx.AsyncClient(transport=transport, **_http_options(settings, base_url))
    return AsyncMLClient(
        http,
        retries=settings.retries,
        backoff_s=settings.backoff_s,
        breaker=breaker if breaker is not None else _breaker_from(settings),
    )


def _http_options(settings: ClientSettings, base_url: str | None) -> dict[str, Any]:
    url = base_url or settings.url
    if not url:
        raise ValueError("no ML server URL: set QUANTCREW_CLIENT__URL (client.url) or pass base_url")
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


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(root)"
    return f"{loc}: {first['msg']}"
