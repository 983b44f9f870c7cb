"""drive / adrive: one generator of steps run with blocking or awaited steps."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import pytest

from quantcrew.tools.flow import adrive, drive


def _doubler(steps: list[int]) -> Generator[int, Any, list[int]]:
    """Yields each number and collects what the driver answers."""
    answers = []
    for step in steps:
        answers.append((yield step))
    return answers


def _catching() -> Generator[str, Any, str]:
    try:
        yield "boom"
    except KeyError as exc:
        return f"caught {exc.args[0]}"
    return "not reached"


def _perform(step: int) -> int:
    return step * 2


async def _aperform(step: int) -> int:
    await asyncio.sleep(0)
    return step * 2


def _fail(step: str) -> str:
    raise KeyError(step)


async def _afail(step: str) -> str:
    raise KeyError(step)


def test_drive_sends_each_result_back_and_returns_the_flow_value() -> None:
    assert drive(_doubler([1, 2, 3]), _perform) == [2, 4, 6]


def test_drive_returns_at_once_when_the_flow_yields_nothing() -> None:
    assert drive(_doubler([]), _perform) == []


def test_adrive_matches_drive_for_the_same_flow() -> None:
    assert asyncio.run(adrive(_doubler([1, 2, 3]), _aperform)) == drive(_doubler([1, 2, 3]), _perform)


def test_drive_throws_a_step_failure_into_the_flow_where_it_can_be_caught() -> None:
    assert drive(_catching(), _fail) == "caught boom"
    assert asyncio.run(adrive(_catching(), _afail)) == "caught boom"


def test_drive_raises_a_step_failure_the_flow_does_not_catch() -> None:
    def uncaught() -> Generator[str, Any, None]:
        yield "boom"

    with pytest.raises(KeyError, match="boom"):
        drive(uncaught(), _fail)
    with pytest.raises(KeyError, match="boom"):
        asyncio.run(adrive(uncaught(), _afail))


def test_adrive_lets_the_flow_clean_up_when_cancelled() -> None:
    cleaned: list[str] = []

    def flow() -> Generator[str, Any, None]:
        try:
            yield "wait forever"
        finally:
            cleaned.append("done")

    async def hang(step: str) -> None:
        await asyncio.Event().wait()

    async def main() -> None:
        task = asyncio.create_task(adrive(flow(), hang))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert cleaned == ["done"]
