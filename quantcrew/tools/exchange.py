"""One exchange with the ML server, written once for both clients.

``MLClientBase`` owns everything but I/O: building the request from a row of the endpoint
table (:mod:`quantcrew.tools.endpoints`), the retry policy, the circuit-breaker bookkeeping,
and parsing the response into the error tree (:mod:`quantcrew.tools.errors`) or the reply's
pydantic model. The exchange itself is one generator, ``_exchange``: it yields a ``Send``
(send this request) or a ``Wait`` (sleep this long) and receives the response back, so
:class:`quantcrew.tools.client.MLClient` drives it with blocking I/O and
:class:`quantcrew.tools.client.AsyncMLClient` awaits it (:mod:`quantcrew.tools.flow`).

Retries: only for idempotent endpoints (``regime_fit`` creates a registry version and is
never retried), only after a retryable fault (unavailable, timeout, 503 not ready; never a
4xx, another 5xx or an open breaker), at most ``retries`` times, with exponential backoff
and jitter. Every attempt passes through the breaker; a retry is not made once it has opened.
The probes ``health`` and ``ready`` make one attempt and bypass the breaker: they exist to
ask "is it up now?", and an open breaker must not hide the answer.

When the breaker opens, a client made with ``report_trips`` (``make_client`` does) tells the
server (``POST /v1/monitor/events``, kind ``breaker_open``, which the server's alert rules count),
best effort, after the next call that succeeds (never past an open breaker: a struggling server is
not sent more). A report that fails is kept for the next chance; it never raises into the call.

Several servers (``urls``): one breaker per URL, and a call that fails on one URL may move on to the
next in the same call; :mod:`quantcrew.tools.servers` states the rules (which call may move on, when
a URL is skipped, how a recovered primary gets its traffic back). A breaker's opening is then reported
to the server that answered next, naming the URL whose breaker opened.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Awaitable, Callable, Generator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Generic, Self, TypeVar, overload
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from quantcrew.ml_server.schemas.alerts import MonitorEventRequest
from quantcrew.ml_server.schemas.common import WireModel
from quantcrew.tools import endpoints as ep
from quantcrew.tools.breaker import BreakerState, CircuitBreaker
from quantcrew.tools.endpoints import Endpoint
from quantcrew.tools.errors import (
    CircuitOpenError,
    MLClientError,
    MLResponseError,
    MLServerFault,
    error_from_response,
    map_transport_errors,
)
from quantcrew.tools.servers import (
    Hop,
    Server,
    all_open_error,
    build_servers,
    describe_fault,
    may_fail_over,
    name_servers,
    route,
)

__all__ = ["DEFAULT_MAX_BACKOFF_S", "DEFAULT_PROBE_TIMEOUT_S", "CallInfo", "MLClientBase", "Send", "Wait"]

DEFAULT_MAX_BACKOFF_S = 5.0
"""Default cap on one backoff (and on a server's Retry-After), in seconds."""
DEFAULT_PROBE_TIMEOUT_S = 2.0
"""Default limit on the ``GET /health`` that a client with several servers asks a recovering one."""

_T = TypeVar("_T")
_Req = TypeVar("_Req", bound=WireModel)
_H = TypeVar("_H", httpx.Client, httpx.AsyncClient)

_JSON_HEADERS = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What the last call on a client did, for a tool's metadata.

    Attributes:
        endpoint: Endpoint name, e.g. ``"regime_label"``.
        attempts: Requests sent (0 when the breaker refused the call).
        elapsed_ms: Wall time of the whole call, retries and backoff included.
        status_code: Status of the last reply, or None when there was none.
        ok: Whether the call returned a result.
        url: The server that answered it (None when it failed).
    """

    endpoint: str
    attempts: int
    elapsed_ms: float
    status_code: int | None
    ok: bool
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Send:
    """A step of an exchange: send ``request``; the exchange receives the ``httpx.Response``."""

    request: httpx.Request


@dataclass(frozen=True, slots=True)
class Wait:
    """A step of an exchange: sleep ``seconds`` before the next attempt; the exchange receives None."""

    seconds: float


class _Post(Generic[_Req, _T]):
    """A POST endpoint as a client method: ``client.risk_var(request) -> VarResponse`` (awaitable when async)."""

    def __init__(self, endpoint: Endpoint[_Req, _T]) -> None:
        self.endpoint = endpoint
        self.__doc__ = endpoint.doc

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: MLClientBase[httpx.Client], owner: type[Any] | None = None) -> Callable[[_Req], _T]: ...
    @overload
    def __get__(
        self, obj: MLClientBase[httpx.AsyncClient], owner: type[Any] | None = None
    ) -> Callable[[_Req], Awaitable[_T]]: ...
    def __get__(self, obj: MLClientBase[Any] | None, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        return obj._bind(self.endpoint)


class _OnPath(Generic[_Req, _T]):
    """An endpoint with an id in its path as a client method: ``client.models_promote(name, request)``
    (awaitable when async); ``request`` is the body."""

    def __init__(self, endpoint: Endpoint[_Req, _T]) -> None:
        self.endpoint = endpoint
        self.__doc__ = endpoint.doc

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: MLClientBase[httpx.Client], owner: type[Any] | None = None) -> Callable[[str, _Req], _T]: ...
    @overload
    def __get__(
        self, obj: MLClientBase[httpx.AsyncClient], owner: type[Any] | None = None
    ) -> Callable[[str, _Req], Awaitable[_T]]: ...
    def __get__(self, obj: MLClientBase[Any] | None, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        return obj._bind(self.endpoint, on_path=True)


class _Lookup(Generic[_T]):
    """A GET of one thing by the id in its path as a client method: ``client.models_lineage(model_id)``."""

    def __init__(self, endpoint: Endpoint[Any, _T]) -> None:
        self.endpoint = endpoint
        self.__doc__ = endpoint.doc

    @overload
    def __get__(self, obj: None, owner: type[Any] | None = None) -> Self: ...
    @overload
    def __get__(self, obj: MLClientBase[httpx.Client], owner: type[Any] | None = None) -> Callable[[str], _T]: ...
    @overload
    def __get__(
        self, obj: MLClientBase[httpx.AsyncClient], owner: type[Any] | None = None
    ) -> Callable[[str], Awaitable[_T]]: ...
    def __get__(self, obj: MLClientBase[Any] | None, owner: type[Any] | None = None) -> Any:
        if obj is None:
            return self
        return obj._bind(self.endpoint, on_path=True)


class MLClientBase(Generic[_H]):
    """Everything the sync and async clients share: building, retrying, breaking, parsing.

    A subclass adds how to perform the steps of ``_exchange`` (blocking or awaited), ``_bind``
    (one POST endpoint as a method) and the methods that take no request body.
    """

    def __init__(
        self,
        http: _H,
        *,
        retries: int,
        backoff_s: float,
        breaker: CircuitBreaker | None,
        max_backoff_s: float,
        rng: random.Random | None,
        report_trips: bool = False,
        urls: Sequence[str] | None = None,
        breakers: Sequence[CircuitBreaker] | None = None,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if backoff_s < 0 or max_backoff_s < 0:
            raise ValueError(f"backoff_s and max_backoff_s must be >= 0, got {backoff_s} and {max_backoff_s}")
        if not probe_timeout_s > 0:
            raise ValueError(f"probe_timeout_s must be positive, got {probe_timeout_s}")
        self._http: _H = http
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.probe_timeout_s = probe_timeout_s
        self._servers, self._relative = build_servers(str(http.base_url), breaker, urls, breakers)
        self._multi = len(self._servers) > 1
        self._one_hop = [Hop(0, False)]
        self._rng = rng if rng is not None else random.Random()
        self.last_call: CallInfo | None = None
        self._urls: dict[tuple[int, str], Any] = {}
        self._urls_base: object = None
        self.report_trips = report_trips
        """Whether the breaker's openings are reported to the server (``make_client`` turns it on)."""
        self.client_id = f"{socket.gethostname()}:{os.getpid()}"
        """Names this client in the events it reports to the server (breaker openings)."""

    @property
    def base_url(self) -> httpx.URL:
        """The server's base URL, from the injected HTTP client (with several URLs, the primary's)."""
        return self._http.base_url

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The circuit breaker of the (first) server, or None for none."""
        return self._servers[0].breaker

    @property
    def servers(self) -> tuple[Server, ...]:
        """The servers this client calls, primary first, each with its own breaker."""
        return tuple(self._servers)

    @property
    def last_call_ms(self) -> float | None:
        """Wall time of the last call in milliseconds (last writer wins under concurrency)."""
        return self.last_call.elapsed_ms if self.last_call is not None else None

    def __repr__(self) -> str:
        if self._multi:
            return f"{type(self).__name__}(urls={[s.url for s in self._servers]!r}, retries={self.retries})"
        return f"{type(self).__name__}(base_url={str(self.base_url)!r}, retries={self.retries})"

    regime_label = _Post(ep.REGIME_LABEL)
    regime_fit = _Post(ep.REGIME_FIT)
    regime_predict = _Post(ep.REGIME_PREDICT)
    regime_causal = _Post(ep.REGIME_CAUSAL)
    risk_covariance = _Post(ep.RISK_COVARIANCE)
    risk_var = _Post(ep.RISK_VAR)
    risk_backtest = _Post(ep.RISK_BACKTEST)
    decompose_analyze = _Post(ep.DECOMPOSE_ANALYZE)
    decompose_fit = _Post(ep.DECOMPOSE_FIT)
    decompose_transform = _Post(ep.DECOMPOSE_TRANSFORM)
    cluster_analyze = _Post(ep.CLUSTER_ANALYZE)
    cluster_fit = _Post(ep.CLUSTER_FIT)
    cluster_predict = _Post(ep.CLUSTER_PREDICT)
    anomaly_detect = _Post(ep.ANOMALY_DETECT)
    anomaly_fit = _Post(ep.ANOMALY_FIT)
    anomaly_score = _Post(ep.ANOMALY_SCORE)
    supervised_analyze = _Post(ep.SUPERVISED_ANALYZE)
    supervised_fit = _Post(ep.SUPERVISED_FIT)
    supervised_predict = _Post(ep.SUPERVISED_PREDICT)
    rl_train = _Post(ep.RL_TRAIN)
    rl_act = _Post(ep.RL_ACT)
    rl_evaluate = _Post(ep.RL_EVALUATE)
    bandit_create = _Post(ep.BANDIT_CREATE)
    bandit_select = _Post(ep.BANDIT_SELECT)
    bandit_reward = _Post(ep.BANDIT_REWARD)
    bandit_replay = _Post(ep.BANDIT_REPLAY)
    bandit_simulate = _Post(ep.BANDIT_SIMULATE)
    ensemble_train = _Post(ep.ENSEMBLE_TRAIN)
    ensemble_predict = _Post(ep.ENSEMBLE_PREDICT)
    ensemble_deploy = _Post(ep.ENSEMBLE_DEPLOY)
    execution_plan = _Post(ep.EXECUTION_PLAN)
    explain_global = _Post(ep.EXPLAIN_GLOBAL)
    explain_local = _Post(ep.EXPLAIN_LOCAL)
    alerts_evaluate = _Post(ep.ALERTS_EVALUATE)
    monitor_event = _Post(ep.MONITOR_EVENT)
    monitor_outcomes = _Post(ep.MONITOR_OUTCOMES)
    monitor_drift = _Post(ep.MONITOR_DRIFT)
    monitor_drift_report = _Lookup(ep.MONITOR_DRIFT_REPORT)
    models_compare = _Post(ep.MODELS_COMPARE)
    models_cleanup = _Post(ep.MODELS_CLEANUP)
    models_stage = _OnPath(ep.MODELS_STAGE)
    models_promote = _OnPath(ep.MODELS_PROMOTE)
    models_rollback = _OnPath(ep.MODELS_ROLLBACK)
    models_lineage = _Lookup(ep.MODELS_LINEAGE)

    def _bind(self, endpoint: Endpoint[Any, Any], *, on_path: bool = False) -> Callable[..., Any]:
        """``endpoint`` as a method taking its request (see ``_Post``)."""
        raise NotImplementedError

    def _exchange(
        self, endpoint: Endpoint[Any, _T], body: WireModel | None, path_id: str | None
    ) -> Generator[Send | Wait, Any, _T]:
        """One call, retries and failover included: yields ``Send`` and ``Wait`` steps, returns the parsed reply.

        Each round walks the route (:func:`quantcrew.tools.servers.route`; with one server, that server),
        moving to the next server after a fault that allows it; a round that ends in a fault is followed
        by a backoff and a new round while the retry policy allows.

        Raises:
            TypeError: ``body`` is not the endpoint's request type (before anything is sent).
            ValueError: an empty ``path_id``.
            quantcrew.tools.errors.MLClientError: the call failed (after any retries and failover).
        """
        requests = {0: self._build_request(endpoint, body, path_id, 0)}
        started = time.perf_counter()
        attempts, status, recorded, retry = 0, None, False, 0
        last: MLClientError | None = None
        tried: list[tuple[str, str]] = []
        reached: str | None = None
        try:
            while True:
                hops = self._route(endpoint)
                tried_this_round = False
                for n, hop in enumerate(hops):
                    server = self._servers[hop.index]
                    if hop.probe and not (yield from self._probe(hop.index)):
                        tried.append((server.url, "health probe failed"))
                        continue
                    request = requests.get(hop.index)
                    if request is None:
                        request = requests[hop.index] = self._build_request(endpoint, body, path_id, hop.index)
                    tried_this_round = True
                    try:
                        with self._guard(server, endpoint):
                            attempts += 1
                            with map_transport_errors():
                                response: httpx.Response = yield Send(request)
                            status = response.status_code
                            result = self._parse(endpoint, response)
                    except MLClientError as exc:
                        last = exc
                        if not self._multi:
                            break
                        tried.append((server.url, describe_fault(exc)))
                        if n < len(hops) - 1 and self._move_on(server, endpoint, exc):
                            continue
                        if not endpoint.idempotent and exc.server_fault and not exc.nothing_sent:
                            reached = server.url
                        break
                    self._record(endpoint, attempts, started, status, True, server.url)
                    recorded = True
                    yield from self._report_trips(hop.index)
                    return result
                if last is None:
                    raise all_open_error(self._servers)  # several servers, none would take the call
                delay = self._retry_delay(endpoint, last, retry) if tried_this_round else None
                if delay is None:
                    if self._multi:
                        name_servers(last, tried, reached=reached)
                    raise last
                yield Wait(delay)
                retry += 1
        except BaseException:
            if not recorded:
                self._record(endpoint, attempts, started, status, False, None)
            raise

    def _route(self, endpoint: Endpoint[Any, Any]) -> list[Hop]:
        """The servers this call tries now, in order."""
        if not self._multi:
            return self._one_hop
        if endpoint.probe:  # "is it up?" asks every server in turn, whatever its breaker says
            return [Hop(i, False) for i in range(len(self._servers))]
        return route([server.state for server in self._servers])

    def _move_on(self, server: Server, endpoint: Endpoint[Any, Any], exc: MLClientError) -> bool:
        """Whether the call goes on to the next server after ``exc`` on ``server``; trips ``server`` if it does."""
        if endpoint.probe:
            return exc.server_fault
        if not may_fail_over(endpoint.idempotent, exc):
            return False
        if server.breaker is not None and not isinstance(exc, CircuitOpenError):
            server.breaker.trip()  # the calls after this one go straight to the next server
        return True

    def _probe(self, index: int) -> Generator[Send, Any, bool]:
        """Ask a server whose breaker is half-open ``GET /health`` as the breaker's trial: True closes it."""
        breaker = self._servers[index].breaker
        if breaker is None:
            return True
        try:
            trial = breaker.before_call()
        except CircuitOpenError:  # another call holds the trial, or the breaker opened again
            return False
        url = self._servers[index].url + ep.HEALTH.path
        try:
            request = self._http.build_request("GET", url, timeout=self.probe_timeout_s)
            with map_transport_errors():
                response: httpx.Response = yield Send(request)
        except MLClientError:
            breaker.record_failure(trial)
            return False
        except BaseException:
            breaker.release(trial)
            raise
        if response.status_code == 200:
            breaker.record_success(trial)
            return True
        breaker.record_failure(trial)
        return False

    def _report_trips(self, via: int) -> Generator[Send, Any, None]:
        """Send the breakers' unreported openings to server ``via`` (the one that just answered), best effort: one
        attempt each, past the breaker; what is not taken is kept for the next chance, and nothing raises (a
        cancellation is passed on). Each event names the server whose breaker opened."""
        if not self.report_trips:
            return
        for server in self._servers:
            breaker = server.breaker
            if breaker is None or not breaker.pending_trips:
                continue
            about = server.url if self._multi else str(self.base_url)
            trips = breaker.take_trips()
            for i, trip in enumerate(trips):
                event = MonitorEventRequest(kind="breaker_open", client=self.client_id, server=about,
                                            at=trip.at, failures=trip.failures, event_id=trip.event_id)
                try:
                    response: httpx.Response = yield Send(self._build_request(ep.MONITOR_EVENT, event, None, via))
                except Exception:  # noqa: BLE001 - best effort: the server went away again; report later
                    breaker.return_trips(trips[i:])
                    return
                except BaseException:
                    breaker.return_trips(trips[i:])
                    raise
                if response.status_code >= 500 or response.status_code in (408, 429):
                    breaker.return_trips(trips[i:])
                    return
                # a 2xx took it; another 4xx (a server without the route) never will: dropped

    def _build_request(
        self, endpoint: Endpoint[Any, Any], body: WireModel | None, path_id: str | None, index: int = 0
    ) -> httpx.Request:
        if endpoint.request_type is not None and type(body) is not endpoint.request_type:
            raise TypeError(f"{endpoint.name} takes a {endpoint.request_type.__name__}, got {type(body).__name__}")
        url: Any
        if path_id is not None:
            if not path_id:
                raise ValueError(f"{endpoint.name}: the id must not be empty")
            url = endpoint.path.format(id=quote(path_id, safe=""))
            if not self._relative:
                url = self._servers[index].url + url
        else:
            url = self._url(endpoint.path, index)
        if body is None:
            return self._http.build_request(endpoint.method, url)
        return self._http.build_request(
            endpoint.method, url, content=body.model_dump_json().encode(), headers=_JSON_HEADERS
        )

    def _url(self, path: str, index: int = 0) -> Any:
        """The absolute URL of an endpoint's fixed path on server ``index``, built by the HTTP client once.

        Joining a relative path parses two URLs, more than half of what building a request costs;
        a request built on an absolute URL of the HTTP client's own type skips that. The cache is
        dropped when the client's base URL is replaced.
        """
        base = self._http.base_url
        if base is not self._urls_base:
            self._urls, self._urls_base = {}, base
        key = (index, path)
        url = self._urls.get(key)
        if url is None:
            target = path if self._relative else self._servers[index].url + path
            url = self._urls[key] = self._http.build_request("GET", target).url
        return url

    @staticmethod
    def _guard(server: Server, endpoint: Endpoint[Any, Any]) -> AbstractContextManager[None]:
        if server.breaker is None or endpoint.probe:
            return nullcontext()
        return server.breaker.guard()

    @staticmethod
    def _parse(endpoint: Endpoint[Any, _T], response: httpx.Response) -> _T:
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

    def _retry_delay(self, endpoint: Endpoint[Any, Any], exc: MLClientError, attempt: int) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None to give up and raise ``exc``."""
        if not (endpoint.idempotent and not endpoint.probe and exc.retryable and attempt < self.retries):
            return None
        if all(s.breaker is not None and s.breaker.state is BreakerState.OPEN for s in self._servers):
            return None  # the next attempt would only be refused; report the real fault instead
        ceiling = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        delay = ceiling * self._rng.uniform(0.5, 1.0)  # jitter keeps clients from retrying in step
        if isinstance(exc, MLResponseError) and exc.retry_after_s is not None:  # the server said when
            delay = min(max(delay, exc.retry_after_s), self.max_backoff_s)
        return delay

    def _record(
        self, endpoint: Endpoint[Any, Any], attempts: int, started: float, status: int | None, ok: bool,
        url: str | None,
    ) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        self.last_call = CallInfo(endpoint.name, attempts, elapsed_ms, status, ok, url)


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(root)"
    return f"{loc}: {first['msg']}"
