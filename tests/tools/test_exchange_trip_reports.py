"""A client whose circuit breaker opens reports it to the real server (``POST /v1/monitor/events``), best effort:
at once when the server still answers, else after the next call that succeeds; a report that cannot be sent is
kept and never raises into the call. The server's alert rules then see the trip."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from quantcrew.config.settings import Settings
from quantcrew.ml_server.app import create_app
from quantcrew.tools.breaker import BreakerState, CircuitBreaker
from quantcrew.tools.client import MLClient
from quantcrew.tools.errors import MLServerFault, MLServerUnavailable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Network:
    """The client's HTTP client, in front of the real app: while ``down`` every request fails to connect; while
    ``faulty`` the risk route answers 500 (the server is up, its route broken); otherwise the app answers."""

    def __init__(self, app_client: TestClient) -> None:
        self.app = app_client
        self.down = False
        self.faulty = False
        self.paths: list[str] = []

    @property
    def base_url(self) -> Any:
        return self.app.base_url

    def build_request(self, *args: Any, **kwargs: Any) -> Any:
        return self.app.build_request(*args, **kwargs)

    def send(self, request: Any) -> Any:
        self.paths.append(request.url.path)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if self.faulty and request.url.path == "/v1/models":
            return httpx.Response(500, json={"error": {"code": "internal_error", "message": "boom", "details": None}},
                                  request=request)
        return self.app.send(request)

    def close(self) -> None:
        pass


@pytest.fixture
def parts(settings: Settings) -> Iterator[tuple[MLClient, Network, CircuitBreaker, Clock, TestClient]]:
    with TestClient(create_app(settings)) as app_client:
        network = Network(app_client)
        clock = Clock()
        breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=30.0, clock=clock)
        client = MLClient(network, retries=0, breaker=breaker, report_trips=True)  # type: ignore[arg-type]
        yield client, network, breaker, clock, app_client


def _breaker_alerts(app_client: TestClient) -> list[dict[str, Any]]:
    app_client.post("/v1/monitor/alerts/evaluate", json={"rules": ["client-breaker-open"]})
    return [a for a in app_client.get("/v1/monitor/alerts").json()["alerts"] if a["rule"] == "client-breaker-open"]


def test_an_unreachable_server_hears_of_the_trip_after_the_next_successful_call(
        parts: tuple[MLClient, Network, CircuitBreaker, Clock, TestClient]) -> None:
    client, network, breaker, clock, app_client = parts
    network.down = True
    for _ in range(2):
        with pytest.raises(MLServerUnavailable):
            client.list_models()
    assert breaker.state is BreakerState.OPEN and breaker.pending_trips == 1
    assert "/v1/monitor/events" not in network.paths  # nobody to tell: no report tried
    network.down = False
    clock.now += 30.0
    client.list_models()  # the half-open trial succeeds, then the trip is reported
    assert breaker.pending_trips == 0 and network.paths[-1] == "/v1/monitor/events"
    (alert,) = _breaker_alerts(app_client)
    assert alert["labels"] == {"client": client.client_id, "server": str(client.base_url)}
    assert client.last_call is not None and client.last_call.endpoint == "list_models"


def test_a_server_that_answers_with_faults_hears_of_the_trip_only_once_a_call_succeeds(
        parts: tuple[MLClient, Network, CircuitBreaker, Clock, TestClient]) -> None:
    client, network, breaker, clock, app_client = parts
    network.faulty = True
    for _ in range(2):
        with pytest.raises(MLServerFault):
            client.list_models()
    assert breaker.state is BreakerState.OPEN and breaker.pending_trips == 1
    assert "/v1/monitor/events" not in network.paths  # an open breaker sends a struggling server nothing more
    network.faulty = False
    clock.now += 30.0
    client.list_models()
    assert network.paths.count("/v1/monitor/events") == 1 and breaker.pending_trips == 0
    (alert,) = _breaker_alerts(app_client)
    assert alert["value"] == 1.0


def test_a_report_that_cannot_be_sent_is_kept_and_never_raises_into_the_call(
        parts: tuple[MLClient, Network, CircuitBreaker, Clock, TestClient]) -> None:
    client, network, breaker, clock, app_client = parts
    network.faulty = True
    with pytest.raises(MLServerFault):
        client.list_models()

    real_send = network.send

    def down_for_reports(request: Any) -> Any:
        if request.url.path == "/v1/monitor/events":
            raise httpx.ConnectError("connection refused", request=request)
        return real_send(request)

    network.send = down_for_reports  # type: ignore[method-assign]
    with pytest.raises(MLServerFault):
        client.list_models()
    assert breaker.pending_trips == 1
    network.faulty = False
    clock.now += 30.0
    client.list_models()  # succeeds; its report fails and is kept, the call's answer still comes back
    assert breaker.pending_trips == 1 and client.last_call is not None and client.last_call.endpoint == "list_models"
    network.send = real_send  # type: ignore[method-assign]
    client.list_models()
    assert breaker.pending_trips == 0 and len(_breaker_alerts(app_client)) == 1


def test_a_client_without_reporting_sends_nothing(settings: Settings) -> None:
    with TestClient(create_app(settings)) as app_client:
        network = Network(app_client)
        breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=30.0, clock=Clock())
        client = MLClient(network, retries=0, breaker=breaker)  # type: ignore[arg-type]
        network.faulty = True
        with pytest.raises(MLServerFault):
            client.list_models()
        assert "/v1/monitor/events" not in network.paths and breaker.pending_trips == 1


def test_the_async_client_reports_a_trip_the_same_way(settings: Settings) -> None:
    import asyncio

    from quantcrew.tools.client import AsyncMLClient

    with TestClient(create_app(settings)) as app_client:  # the lifespan; the async client talks to the same app
        state = {"down": True}

        async def handler(request: httpx.Request) -> httpx.Response:
            if state["down"]:
                raise httpx.ConnectError("connection refused", request=request)
            inner = app_client.build_request(request.method, request.url.path, content=request.content,
                                             headers={"content-type": "application/json"})
            reply = await asyncio.to_thread(app_client.send, inner)
            return httpx.Response(reply.status_code, content=reply.content, headers=dict(reply.headers))

        clock = Clock()
        breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=30.0, clock=clock)

        async def main() -> None:
            http = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://ml.test")
            async with AsyncMLClient(http, retries=0, breaker=breaker, report_trips=True) as client:
                with pytest.raises(MLServerUnavailable):
                    await client.list_models()
                state["down"] = False
                clock.now += 30.0
                await client.list_models()

        asyncio.run(main())
        assert breaker.pending_trips == 0
        (alert,) = _breaker_alerts(app_client)
        assert alert["labels"]["server"] == "http://ml.test"
