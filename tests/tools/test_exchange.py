"""The one exchange both clients drive: its Send / Wait steps, and cleanup when a call is cancelled."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest

from quantcrew.ml_server.schemas.cluster import ClusterPredictRequest
from quantcrew.tools import endpoints as ep
from quantcrew.tools.breaker import CircuitBreaker
from quantcrew.tools.client import AsyncMLClient, MLClient
from quantcrew.tools.errors import MLServerUnavailable
from quantcrew.tools.exchange import Send, Wait

BASE = "http://ml.test"


def _unused(request: httpx.Request) -> httpx.Response:
    raise AssertionError("the test performs the steps itself")


def test_exchange_yields_send_then_wait_then_send_after_a_retryable_fault() -> None:
    client = MLClient(httpx.Client(base_url=BASE, transport=httpx.MockTransport(_unused)), retries=1,
                      rng=random.Random(0))
    flow = client._exchange(ep.LIST_MODELS, None, None)
    first = next(flow)
    assert isinstance(first, Send) and first.request.url.path == "/v1/models"
    wait = flow.throw(httpx.ConnectError("refused", request=first.request))
    assert isinstance(wait, Wait) and 0.05 <= wait.seconds <= 0.1  # first backoff 0.1 s, jittered to 50-100 %
    again = flow.send(None)
    assert isinstance(again, Send) and again.request is first.request
    with pytest.raises(StopIteration) as stop:
        flow.send(httpx.Response(200, json=[]))
    assert stop.value.value == []
    assert client.last_call is not None
    assert (client.last_call.endpoint, client.last_call.attempts, client.last_call.ok) == ("list_models", 2, True)


def test_exchange_raises_the_mapped_fault_once_retries_are_spent() -> None:
    client = MLClient(httpx.Client(base_url=BASE, transport=httpx.MockTransport(_unused)), retries=0)
    flow = client._exchange(ep.LIST_MODELS, None, None)
    send = next(flow)
    assert isinstance(send, Send)
    with pytest.raises(MLServerUnavailable):
        flow.throw(httpx.ConnectError("refused", request=send.request))
    assert client.last_call is not None and client.last_call.ok is False


def test_cancelled_async_call_records_a_failure_and_frees_the_breaker_trial() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=1.0, clock=lambda: now[0])
    hang = asyncio.Event()
    replies: list[str] = ["refuse", "hang", "ok"]

    async def handler(request: httpx.Request) -> httpx.Response:
        reply = replies.pop(0)
        if reply == "refuse":
            raise httpx.ConnectError("refused", request=request)
        if reply == "hang":
            await hang.wait()
        return httpx.Response(200, json=[])

    async def main() -> None:
        http = httpx.AsyncClient(base_url=BASE, transport=httpx.MockTransport(handler))
        async with AsyncMLClient(http, retries=0, breaker=breaker) as client:
            with pytest.raises(MLServerUnavailable):
                await client.list_models()  # opens the breaker
            now[0] = 2.0  # half-open: the next call is the one trial
            task = asyncio.create_task(client.list_jobs())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert client.last_call is not None
            assert (client.last_call.endpoint, client.last_call.ok) == ("list_jobs", False)
            assert await client.list_models() == []  # not CircuitOpenError: the cancelled trial gave its slot back

    asyncio.run(main())


@pytest.mark.parametrize("base", ["http://ml.test", "http://ml.test/prefix/", "http://[::1]:8765/a/b"])
def test_requests_go_to_the_url_the_http_client_would_join_itself(base: str) -> None:
    http = httpx.Client(base_url=base, transport=httpx.MockTransport(_unused))
    client = MLClient(http)
    endpoints: list[ep.Endpoint[Any, Any]] = [ep.LIST_MODELS, ep.HEALTH, ep.CLUSTER_PREDICT, ep.LIST_MODELS]
    for endpoint in endpoints:  # LIST_MODELS the second time from the cache
        send = next(client._exchange(endpoint, None if endpoint.request_type is None else _cluster_predict(), None))
        assert isinstance(send, Send)
        assert send.request.url == http.build_request(endpoint.method, endpoint.path).url


def test_a_replaced_base_url_is_used_from_the_next_call() -> None:
    http = httpx.Client(base_url=BASE, transport=httpx.MockTransport(_unused))
    client = MLClient(http)
    first = next(client._exchange(ep.LIST_MODELS, None, None))
    http.base_url = httpx.URL("http://elsewhere.test/api")
    second = next(client._exchange(ep.LIST_MODELS, None, None))
    assert isinstance(first, Send) and isinstance(second, Send)
    assert (str(first.request.url), str(second.request.url)) == ("http://ml.test/v1/models",
                                                                 "http://elsewhere.test/api/v1/models")


def _cluster_predict() -> ClusterPredictRequest:
    return ClusterPredictRequest.model_validate({"model_id": "m", "data": {"columns": ["a"], "values": [[1.0]]}})
