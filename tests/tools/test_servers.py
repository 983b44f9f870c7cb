"""A client with several servers: routing by breaker state, which calls may move on, and what errors say.

The servers are hosts behind one ``httpx.MockTransport``; each host is up, refuses connections (nothing
is sent), dies mid-request (the request reached it), or answers with an error status. The breakers run
on a clock the test moves. Real uvicorn servers killed for real: tests/tools/test_failover.py.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantcrew.config.settings import ClientSettings
from quantcrew.ml_server.schemas.alerts import MonitorEventAccepted
from quantcrew.ml_server.schemas.bandit import BanditDeleted
from quantcrew.ml_server.schemas.common import HealthResponse
from quantcrew.tools.breaker import BreakerState, CircuitBreaker
from quantcrew.tools.client import AsyncMLClient, MLClient, make_async_client, make_client
from quantcrew.tools.errors import (
    CircuitOpenError,
    MLClientError,
    MLServerFault,
    MLServerUnavailable,
    ModelNotReady,
    NotFound,
    error_from_response,
    map_transport_errors,
)
from quantcrew.tools.servers import build_servers, describe_fault, may_fail_over, name_servers, route

URLS = ("http://a.test", "http://b.test", "http://c.test")
RESET_S = 10.0
UP, REFUSED, DIES = "up", "refused", "dies"


@dataclass
class Cluster:
    """Hosts behind one transport; ``state[host]`` is UP, REFUSED, DIES (mid-request; ``/health`` still answers)
    or an HTTP status to answer with."""

    state: dict[str, str | int] = field(default_factory=lambda: {u: UP for u in URLS})
    received: list[tuple[str, str, str]] = field(default_factory=list)  # (url, method, path) that reached a host

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = f"{request.url.scheme}://{request.url.host}"
        state = self.state[url]
        if state == REFUSED:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        self.received.append((url, request.method, request.url.path))
        if state == DIES and request.url.path != "/health":  # alive enough to answer a probe
            raise httpx.ReadError("connection reset by peer", request=request)
        if isinstance(state, int):
            return httpx.Response(state, json={"error": {"code": "not_ready" if state == 503 else "boom",
                                                         "message": "m", "details": None}})
        return _reply(request)

    def calls(self, path_start: str = "/v1/") -> list[str]:
        """The URLs that received a request under ``path_start`` (not the health probes), in order."""
        return [url for url, _, path in self.received if path.startswith(path_start)
                and not path.startswith("/v1/monitor/events")]


def _reply(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/health":
        return httpx.Response(200, content=HealthResponse(version="t").model_dump_json())
    if path == "/v1/models":
        return httpx.Response(200, json=[])
    if path.startswith("/v1/bandit/"):
        return httpx.Response(200, content=BanditDeleted(bandit_id="bandit-1", name="m", regimes=[],
                                                         decisions=0).model_dump_json())
    if path == "/v1/monitor/events":
        return httpx.Response(200, content=MonitorEventAccepted(event_id=json.loads(request.content)["event_id"])
                              .model_dump_json())
    return httpx.Response(404, json={"error": {"code": "not_found", "message": path, "details": None}})


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _client(cluster: Cluster, clock: Clock, urls: tuple[str, ...] = URLS[:2], **kw: object) -> MLClient:
    http = httpx.Client(transport=httpx.MockTransport(cluster), base_url=urls[0])
    breakers = [CircuitBreaker(3, RESET_S, clock=clock) for _ in urls]
    return MLClient(http, urls=urls, breakers=breakers, sleep=lambda s: None, **kw)  # type: ignore[arg-type]


def _state(client: MLClient, index: int = 0) -> BreakerState:
    return client.servers[index].state


def _idempotent(client: MLClient) -> object:
    return client.list_models()


def _not_idempotent(client: MLClient) -> object:
    return client.bandit_delete("m")


# ---------------------------------------------------------------------------- route and the rules


@given(st.lists(st.sampled_from(list(BreakerState)), min_size=1, max_size=6))
def test_route_keeps_list_order_skips_open_and_probes_half_open(states: list[BreakerState]) -> None:
    hops = route(states)
    assert [h.index for h in hops] == [i for i, s in enumerate(states) if s is not BreakerState.OPEN]
    assert all(h.probe == (states[h.index] is BreakerState.HALF_OPEN) for h in hops)
    if hops:  # the primary is the first server not known to be down
        assert hops[0].index == min(i for i, s in enumerate(states) if s is not BreakerState.OPEN)


def _transport_error(exc: httpx.TransportError) -> MLClientError:
    try:
        with map_transport_errors():
            raise exc
    except MLClientError as error:
        return error
    raise AssertionError("not mapped")


_REQ = httpx.Request("POST", "http://a.test/v1/bandit/select")


@pytest.mark.parametrize(("error", "nothing_sent", "idempotent_moves"), [
    (_transport_error(httpx.ConnectError("refused", request=_REQ)), True, True),
    (_transport_error(httpx.ConnectTimeout("slow connect", request=_REQ)), True, True),
    (_transport_error(httpx.PoolTimeout("pool", request=_REQ)), True, True),
    (_transport_error(httpx.ReadError("reset", request=_REQ)), False, True),
    (_transport_error(httpx.ReadTimeout("slow reply", request=_REQ)), False, True),
    (_transport_error(httpx.RemoteProtocolError("disconnected", request=_REQ)), False, True),
    (CircuitOpenError("open", retry_in_s=1.0, failures=3), True, True),
    (error_from_response(httpx.Response(503, json={"error": {"code": "not_ready", "message": "m"}}, request=_REQ)),
     False, True),
    (error_from_response(httpx.Response(500, json={"error": {"code": "boom", "message": "m"}}, request=_REQ)),
     False, False),
    (error_from_response(httpx.Response(422, json={"error": {"code": "invalid_input", "message": "m"}},
                                        request=_REQ)), False, False),
])
def test_a_call_moves_on_when_nothing_was_sent_or_it_is_idempotent_and_the_fault_retryable(
        error: MLClientError, nothing_sent: bool, idempotent_moves: bool) -> None:
    assert error.nothing_sent is nothing_sent
    assert may_fail_over(False, error) is nothing_sent  # a fit or a reward: only when nothing left the client
    assert may_fail_over(True, error) is idempotent_moves


def test_build_servers_refuses_bad_lists() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        build_servers("http://a.test", None, ["http://a.test", "a.test:80"], None)
    with pytest.raises(ValueError, match="must not repeat"):
        build_servers("http://a.test", None, ["http://a.test/", "http://a.test"], None)
    with pytest.raises(ValueError, match="one breaker cannot serve several URLs"):
        build_servers("http://a.test", CircuitBreaker(), list(URLS[:2]), None)
    shared = CircuitBreaker()
    with pytest.raises(ValueError, match="one distinct breaker per URL"):
        build_servers("http://a.test", None, list(URLS[:2]), [shared, shared])
    servers, relative = build_servers("http://a.test", None, list(URLS), None)
    assert not relative and [s.url for s in servers] == list(URLS)
    assert len({id(s.breaker) for s in servers}) == 3  # one breaker each by default


def test_name_servers_says_a_repeated_fault_once_with_its_count() -> None:
    error = MLServerUnavailable("cannot reach")
    name_servers(error, [("http://a.test", "ConnectError"), ("http://b.test", "ConnectError"),
                         ("http://b.test", "ConnectError")])
    assert error.servers_tried == ("http://a.test", "http://b.test")
    assert str(error) == ("cannot reach [servers tried: http://a.test (ConnectError), "
                          "http://b.test (ConnectError x2)]")


def test_describe_fault_names_the_kind() -> None:
    assert describe_fault(CircuitOpenError("x", retry_in_s=1.0, failures=3)) == "breaker open"
    assert describe_fault(_transport_error(httpx.ConnectError("x", request=_REQ))) == "ConnectError"
    assert describe_fault(error_from_response(httpx.Response(
        503, json={"error": {"code": "not_ready", "message": "m"}}, request=_REQ))) == "503 not_ready"


# ---------------------------------------------------------------------------- the client over several hosts


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.lists(st.booleans(), min_size=3, max_size=3), st.booleans()),
                      min_size=1, max_size=12))
def test_each_call_is_answered_once_by_the_first_server_that_is_up(steps: list[tuple[list[bool], bool]]) -> None:
    # the clock passes every breaker's pause between calls, so a server that is up again is probed and used
    cluster, clock = Cluster(), Clock()
    client = _client(cluster, clock, URLS, retries=0)
    for up, idempotent in steps:
        cluster.state = {url: UP if is_up else REFUSED for url, is_up in zip(URLS, up, strict=True)}
        cluster.received.clear()
        clock.now += RESET_S + 1.0
        call = _idempotent if idempotent else _not_idempotent
        if not any(up):
            with pytest.raises(MLClientError) as raised:
                call(client)
            assert raised.value.server_fault and set(raised.value.servers_tried) == set(URLS)
            continue
        call(client)
        first_up = URLS[up.index(True)]
        assert client.last_call is not None and client.last_call.url == first_up
        assert cluster.calls() == [first_up]  # one server got the call, once


def test_after_a_failover_the_next_calls_go_straight_to_the_second_until_the_first_is_healthy() -> None:
    cluster, clock = Cluster(), Clock()
    client = _client(cluster, clock)
    a, b = URLS[:2]
    _idempotent(client)
    cluster.state[a] = REFUSED
    _not_idempotent(client)  # refused: nothing sent, so even a call that must not repeat moves on
    assert client.last_call is not None and client.last_call.url == b
    assert _state(client) is BreakerState.OPEN  # tripped at the first fault: there is somewhere to go
    cluster.state[a] = UP
    cluster.received.clear()
    for _ in range(3):
        _idempotent(client)
    assert cluster.calls() == [b, b, b]  # the open breaker skips a: no connect paid to a dead server
    clock.now += RESET_S
    cluster.received.clear()
    _idempotent(client)
    assert cluster.received[0] == (a, "GET", "/health")  # the half-open trial is a health probe
    assert cluster.calls() == [a] and _state(client) is BreakerState.CLOSED


def test_a_primary_that_fails_its_health_probe_stays_skipped_for_another_pause() -> None:
    cluster, clock = Cluster(), Clock()
    client = _client(cluster, clock)
    a, b = URLS[:2]
    cluster.state[a] = REFUSED
    _idempotent(client)
    clock.now += RESET_S
    cluster.state[a] = 503
    cluster.received.clear()
    _idempotent(client)
    assert cluster.received == [(a, "GET", "/health"), (b, "GET", "/v1/models")]
    assert client.servers[0].state is BreakerState.OPEN
    cluster.received.clear()
    _idempotent(client)
    assert cluster.received == [(b, "GET", "/v1/models")]


def test_a_call_that_is_not_idempotent_and_may_have_reached_a_server_is_not_replayed() -> None:
    cluster, clock = Cluster(), Clock()
    client = _client(cluster, clock)
    a, b = URLS[:2]
    cluster.state[a] = DIES
    with pytest.raises(MLServerUnavailable) as raised:
        _not_idempotent(client)
    assert cluster.calls() == [a]  # b never saw it
    message = str(raised.value)
    assert a in message and "not sent to another server" in message and f"may have reached {a}" in message
    assert raised.value.servers_tried == (a,)


def test_an_idempotent_call_that_died_in_flight_is_made_on_the_next_server() -> None:
    cluster, clock = Cluster(), Clock()
    client = _client(cluster, clock)
    a, b = URLS[:2]
    cluster.state[a] = DIES
    _idempotent(client)
    assert cluster.calls() == [a, b]
    assert client.last_call is not None and (client.last_call.url, client.last_call.attempts) == (b, 2)


@pytest.mark.parametrize(("status", "error", "moves_on"), [
    (503, ModelNotReady, True), (500, MLServerFault, False), (404, NotFound, False)])
def test_error_replies_move_an_idempotent_call_on_only_when_retryable(
        status: int, error: type[MLClientError], moves_on: bool) -> None:
    cluster, clock = Cluster(), Clock()
    client = _client(cluster, clock, retries=0)
    a, b = URLS[:2]
    cluster.state[a] = status
    if moves_on:
        _idempotent(client)
        assert cluster.calls() == [a, b]
    else:
        with pytest.raises(error):
            _idempotent(client)
        assert cluster.calls() == [a]
    cluster.received.clear()
    with pytest.raises(error):  # a reply, even 503, may mean the call was made: never replayed elsewhere
        _not_idempotent(_client(cluster, clock, retries=0))
    assert cluster.calls() == [a]


def test_every_server_down_names_them_all_then_refuses_without_trying() -> None:
    cluster, clock = Cluster(), Clock()
    client = _client(cluster, clock, retries=2)
    a, b = URLS[:2]
    cluster.state = {a: REFUSED, b: REFUSED}
    with pytest.raises(MLServerUnavailable) as raised:
        _idempotent(client)
    assert raised.value.servers_tried == (a, b)
    assert f"{a} (ConnectError)" in str(raised.value) and f"{b} (ConnectError x3)" in str(raised.value)
    assert all(s.state is BreakerState.OPEN for s in client.servers)
    with pytest.raises(CircuitOpenError) as refused:
        _idempotent(client)
    assert a in str(refused.value) and b in str(refused.value) and refused.value.servers_tried == (a, b)
    assert client.last_call is not None and client.last_call.attempts == 0


def test_health_asks_each_server_in_turn() -> None:
    cluster, clock = Cluster(), Clock()
    client = _client(cluster, clock)
    cluster.state[URLS[0]] = REFUSED
    assert client.health().status == "ok"
    assert client.last_call is not None and client.last_call.url == URLS[1]
    assert client.servers[0].state is BreakerState.CLOSED  # a probe books nothing


def test_a_breaker_opening_is_reported_to_the_server_that_answers_naming_the_url_that_failed() -> None:
    cluster, clock = Cluster(), Clock()
    client = _client(cluster, clock, report_trips=True)
    a, b = URLS[:2]
    cluster.state[a] = REFUSED
    _idempotent(client)
    reports = [(url, path) for url, _, path in cluster.received if path == "/v1/monitor/events"]
    assert reports == [(b, "/v1/monitor/events")]
    assert client.servers[0].breaker is not None and client.servers[0].breaker.pending_trips == 0


def test_the_reported_event_names_the_tripped_url() -> None:
    bodies: list[dict[str, object]] = []
    cluster, clock = Cluster(), Clock()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/monitor/events":
            bodies.append(json.loads(request.content))
        return cluster(request)

    http = httpx.Client(transport=httpx.MockTransport(handler), base_url=URLS[0])
    client = MLClient(http, urls=URLS[:2], breakers=[CircuitBreaker(3, RESET_S, clock=clock) for _ in range(2)],
                      report_trips=True)
    cluster.state[URLS[0]] = REFUSED
    client.list_models()
    assert [(b["kind"], b["server"]) for b in bodies] == [("breaker_open", URLS[0])]


def test_make_client_fails_over_between_the_settings_urls() -> None:
    cluster = Cluster()
    cluster.state[URLS[0]] = REFUSED
    settings = ClientSettings(urls=list(URLS[:2]), breaker_failures=4, breaker_reset_s=9.0)
    client = make_client(settings, transport=httpx.MockTransport(cluster))
    assert [s.url for s in client.servers] == list(URLS[:2])
    assert all(s.breaker is not None and (s.breaker.failure_threshold, s.breaker.reset_timeout_s) == (4, 9.0)
               for s in client.servers)
    client.list_models()
    assert client.last_call is not None and client.last_call.url == URLS[1]
    with pytest.raises(ValueError, match="one breaker cannot serve 2 URLs"):
        make_client(settings, breaker=CircuitBreaker(), transport=httpx.MockTransport(cluster))
    one = make_client(settings, base_url=URLS[2], transport=httpx.MockTransport(cluster))
    assert [s.url for s in one.servers] == [URLS[2]]  # base_url (the CLI's local server) wins


# ---------------------------------------------------------------------------- the async client: the same flow


def _aclient(cluster: Cluster, clock: Clock, **kw: object) -> AsyncMLClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(cluster), base_url=URLS[0])
    breakers = [CircuitBreaker(3, RESET_S, clock=clock) for _ in URLS[:2]]

    async def no_sleep(_: float) -> None:
        return None

    return AsyncMLClient(http, urls=URLS[:2], breakers=breakers, sleep=no_sleep, **kw)  # type: ignore[arg-type]


def test_async_client_fails_over_and_never_replays_a_call_that_may_have_landed() -> None:
    cluster, clock = Cluster(), Clock()
    a, b = URLS[:2]

    async def scenario() -> None:
        client = _aclient(cluster, clock)
        cluster.state[a] = REFUSED
        await client.bandit_delete("m")
        assert client.last_call is not None and client.last_call.url == b
        results = await asyncio.gather(*(client.list_models() for _ in range(5)))
        assert results == [[]] * 5 and Counter(cluster.calls()) == {b: 6}
        clock.now += RESET_S
        cluster.state = {a: DIES, b: UP}  # a passes its health probe, then dies on the call
        cluster.received.clear()
        with pytest.raises(MLServerUnavailable, match="not sent to another server"):
            await client.bandit_delete("m")
        assert cluster.calls() == [a]
        await client.aclose()

    asyncio.run(scenario())


def test_async_make_client_builds_one_breaker_per_url() -> None:
    cluster = Cluster()

    async def scenario() -> None:
        client = make_async_client(ClientSettings(urls=list(URLS)), transport=httpx.MockTransport(cluster))
        assert [s.url for s in client.servers] == list(URLS)
        assert len({id(s.breaker) for s in client.servers}) == 3
        cluster.state[URLS[0]] = REFUSED
        cluster.state[URLS[1]] = 503
        await client.list_models()
        assert client.last_call is not None and client.last_call.url == URLS[2]
        await client.aclose()

    asyncio.run(scenario())


def test_a_one_url_client_keeps_its_old_behaviour() -> None:
    cluster, clock = Cluster(), Clock()
    cluster.state[URLS[0]] = REFUSED
    breaker = CircuitBreaker(3, RESET_S, clock=clock)
    waits: list[float] = []
    client = MLClient(httpx.Client(transport=httpx.MockTransport(cluster), base_url=URLS[0]), breaker=breaker,
                      retries=2, sleep=waits.append)
    with pytest.raises(MLServerUnavailable) as raised:
        client.list_models()
    assert len(waits) == 2 and breaker.state is BreakerState.OPEN  # retried on the one server, then open
    assert raised.value.servers_tried == () and "servers tried" not in str(raised.value)

