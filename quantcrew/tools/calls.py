"""A tool's calls to the ML server, written once and run with either client.

A tool describes its calls as a generator (a :data:`CallFlow`): it yields a :class:`Call`
(one endpoint and its request) or a :class:`FanOut` (several calls at once) and receives the
reply, or the list of replies, as the value of the ``yield``. :class:`~quantcrew.tools.base.QuantTool`
drives the flow (:mod:`quantcrew.tools.flow`) and makes each call with ``perform`` through an
:class:`~quantcrew.tools.client.MLClient`, or with ``aperform`` through an
:class:`~quantcrew.tools.client.AsyncMLClient` (a fan-out then runs concurrently). A call that
fails raises its ``MLClientError`` at the ``yield``, so a tool catches ``NotFound`` around the
call it expects it from. Written with the helpers, a flow reads as straight-line code with
typed replies::

    def _calls(self, prepared):
        decision = yield from call(BANDIT_SELECT, prepared.select)
        ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

from quantcrew.ml_server.schemas.common import WireModel
from quantcrew.tools.endpoints import Endpoint

if TYPE_CHECKING:
    from quantcrew.tools.client import AsyncMLClient, MLClient

__all__ = ["Call", "CallFlow", "FanOut", "aperform", "call", "fan_out", "perform"]

_T = TypeVar("_T")
_R = TypeVar("_R")
_Req = TypeVar("_Req", bound=WireModel)


@dataclass(frozen=True, slots=True)
class Call(Generic[_Req, _T]):
    """One call: the client method named by ``endpoint`` with ``request``; the flow receives its reply."""

    endpoint: Endpoint[_Req, _T]
    request: _Req


@dataclass(frozen=True, slots=True)
class FanOut(Generic[_Req, _T]):
    """The same endpoint with several requests; the flow receives the replies in order, as a list.

    Sync: one after the other. Async: concurrently (``asyncio.gather``); the first failure is raised.
    """

    endpoint: Endpoint[_Req, _T]
    requests: tuple[_Req, ...]


CallFlow: TypeAlias = Generator["Call[Any, Any] | FanOut[Any, Any]", Any, _R]
"""What a tool's ``_calls`` returns: a generator of calls whose return value is the tool's reply."""


def call(endpoint: Endpoint[_Req, _T], request: _Req) -> CallFlow[_T]:
    """``reply = yield from call(ENDPOINT, request)``: one call, with the reply typed by the endpoint."""
    reply: _T = yield Call(endpoint, request)
    return reply


def fan_out(endpoint: Endpoint[_Req, _T], requests: Sequence[_Req]) -> CallFlow[list[_T]]:
    """``replies = yield from fan_out(ENDPOINT, requests)``: one call per request, replies in order."""
    replies: list[_T] = yield FanOut(endpoint, tuple(requests))
    return replies


def perform(client: MLClient, step: Call[Any, Any] | FanOut[Any, Any]) -> Any:
    """Make one step's call(s) through the blocking client; return what the flow receives.

    Raises:
        quantcrew.tools.errors.MLClientError: the call failed (the driver throws it into the flow).
    """
    method = getattr(client, step.endpoint.name)  # the public method, so a subclass's override is honoured
    if isinstance(step, FanOut):
        return [method(request) for request in step.requests]
    return method(step.request)


async def aperform(client: AsyncMLClient, step: Call[Any, Any] | FanOut[Any, Any]) -> Any:
    """``perform`` through the async client; a fan-out's calls run concurrently.

    Raises:
        quantcrew.tools.errors.MLClientError: the call failed (the driver throws it into the flow).
    """
    method = getattr(client, step.endpoint.name)
    if isinstance(step, FanOut):
        return list(await asyncio.gather(*(method(request) for request in step.requests)))
    return await method(step.request)
