"""A tool's calls written once: call / fan_out flows made by perform (sync) and aperform (async)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from quantcrew.tools.calls import CallFlow, aperform, call, fan_out, perform
from quantcrew.tools.client import AsyncMLClient, MLClient
from quantcrew.tools.endpoints import ANOMALY_DETECT, ENSEMBLE_PREDICT
from quantcrew.tools.errors import NotFound
from quantcrew.tools.flow import adrive, drive


def _not_found() -> NotFound:
    return NotFound("no ensemble deployed", status_code=404, code="not_found")


class FakeClient:
    """Stands in for MLClient: the client methods the flows below name, recording what they get."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def anomaly_detect(self, request: Any) -> str:
        self.seen.append(request)
        return f"reply to {request}"

    def ensemble_predict(self, request: Any) -> str:
        raise _not_found()


class FakeAsyncClient:
    """Stands in for AsyncMLClient; ``anomaly_detect`` answers only once ``expected`` calls are in flight."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.in_flight = 0
        self.all_in = asyncio.Event()

    async def anomaly_detect(self, request: Any) -> str:
        self.in_flight += 1
        if self.in_flight == self.expected:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), timeout=5)  # a sequential fan-out would time out here
        return f"reply to {request}"

    async def ensemble_predict(self, request: Any) -> str:
        raise _not_found()


def _one_then_many() -> CallFlow[tuple[Any, list[Any]]]:
    first = yield from call(ANOMALY_DETECT, cast(Any, "a"))
    rest = yield from fan_out(ANOMALY_DETECT, cast(Any, ["b", "c"]))
    return first, rest


def _with_fallback_on_not_found() -> CallFlow[str]:
    try:
        return (yield from call(ENSEMBLE_PREDICT, cast(Any, "x")))
    except NotFound as exc:
        return f"answered without it: {exc.message}"


def _sync(client: FakeClient) -> MLClient:
    return cast(MLClient, client)


def _async(client: FakeAsyncClient) -> AsyncMLClient:
    return cast(AsyncMLClient, client)


def test_perform_calls_the_client_method_named_by_the_endpoint_in_order() -> None:
    client = FakeClient()
    first, rest = drive(_one_then_many(), lambda step: perform(_sync(client), step))
    assert first == "reply to a"
    assert rest == ["reply to b", "reply to c"]
    assert client.seen == ["a", "b", "c"]


def test_aperform_runs_a_fan_out_concurrently() -> None:
    async def main() -> list[Any]:
        client = FakeAsyncClient(expected=3)
        return await adrive(fan_out(ANOMALY_DETECT, cast(Any, ["a", "b", "c"])),
                            lambda step: aperform(_async(client), step))

    assert asyncio.run(main()) == ["reply to a", "reply to b", "reply to c"]


def test_a_failed_call_is_raised_at_its_yield_where_the_flow_catches_it() -> None:
    sync = drive(_with_fallback_on_not_found(), lambda step: perform(_sync(FakeClient()), step))
    asynchronous = asyncio.run(adrive(_with_fallback_on_not_found(),
                                      lambda step: aperform(_async(FakeAsyncClient(1)), step)))
    assert sync == asynchronous == "answered without it: no ensemble deployed"


def test_a_failed_call_the_flow_does_not_catch_reaches_the_caller() -> None:
    with pytest.raises(NotFound):
        drive(call(ENSEMBLE_PREDICT, cast(Any, "x")), lambda step: perform(_sync(FakeClient()), step))
