"""Drive a flow written once, sync or async: a generator of steps and the code that performs them.

A flow is a generator that yields *steps* (what to do: send this request, wait this long)
and receives each step's result back as the value of its ``yield``; its return value is the
flow's result. ``drive`` performs the steps with blocking code, ``adrive`` awaits them. A
step that raises has its exception thrown into the flow at that ``yield``, so the flow's own
``try``/``except``/``with`` blocks see it as if the call had been made inline. This is the
shape of httpx's ``Auth.auth_flow``; it lets the ML clients write their retry loop once and
the tools write their calls once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

__all__ = ["adrive", "drive"]

_S = TypeVar("_S")
_R = TypeVar("_R")


def drive(flow: Generator[_S, Any, _R], perform: Callable[[_S], Any]) -> _R:
    """Run ``flow`` to its end, performing each step with the blocking ``perform``.

    Args:
        flow: A fresh generator of steps.
        perform: Performs one step and returns what the flow receives for it.

    Returns:
        The flow's return value.

    Raises:
        BaseException: whatever the flow raises, including a step's exception it does not catch.
    """
    try:
        step = next(flow)
        while True:
            try:
                result = perform(step)
            except BaseException as exc:  # every exception, cancellation included, belongs to the flow
                step = flow.throw(exc)
            else:
                step = flow.send(result)
    except StopIteration as stop:
        value: _R = stop.value
        return value


async def adrive(flow: Generator[_S, Any, _R], perform: Callable[[_S], Awaitable[Any]]) -> _R:
    """``drive`` with an async ``perform``: each step is awaited.

    Args:
        flow: A fresh generator of steps.
        perform: Returns an awaitable of what the flow receives for one step.

    Returns:
        The flow's return value.

    Raises:
        BaseException: whatever the flow raises, including a step's exception it does not catch.
    """
    try:
        step = next(flow)
        while True:
            try:
                result = await perform(step)
            except BaseException as exc:  # asyncio.CancelledError too: the flow's finally blocks must run
                step = flow.throw(exc)
            else:
                step = flow.send(result)
    except StopIteration as stop:
        value: _R = stop.value
        return value
