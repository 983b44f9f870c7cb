"""Every command's exit codes, and the one place that turns an outcome or an error into one.

The README's table of exit codes is :data:`MEANINGS`, in this order; a test checks that the two
agree. A command never exits 0 when it could not do what it says: a run whose models could not
all answer is ``degraded`` (4) unless ``--allow-degraded`` accepts it, and a key the ML server
refused is named as such (5), never an empty success.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.markup import escape

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["MEANINGS", "RUN_STATUS_EXIT", "ExitCode", "exit_for_error", "exit_for_status", "fail"]


class ExitCode(IntEnum):
    """What a command's exit status means, the same for every command."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    BUDGET_EXCEEDED = 3
    DEGRADED = 4
    AUTH_REFUSED = 5
    SERVER_UNREACHABLE = 6
    INTERRUPTED = 130


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "done: every model asked for answered (a gated model's rule answering by design included)",
    ExitCode.FAILED: "the run, a training job or the server failed (the run is stored as `failed`)",
    ExitCode.BAD_INPUT: "bad input: an option, a settings file, a symbol, a date or a data file (nothing ran)",
    ExitCode.BUDGET_EXCEEDED: "the run's LLM-call or time budget, or a training budget, ran out "
                              "(`budget_exceeded`)",
    ExitCode.DEGRADED: "finished, but degraded: a model could not answer and a fallback rule did, a tool could "
                       "not answer, or rewards were left pending (`degraded`; `--allow-degraded` exits 0)",
    ExitCode.AUTH_REFUSED: "the ML server refused the API key (`auth_failed`): set `QUANTCREW_CLIENT__API_KEY`",
    ExitCode.SERVER_UNREACHABLE: "the ML server named by `--server-url` or `client.url` did not answer",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C); the run is stored as `interrupted`",
}
"""One line per exit code: the README's table."""

RUN_STATUS_EXIT: dict[str, ExitCode] = {
    "succeeded": ExitCode.OK,
    "degraded": ExitCode.DEGRADED,
    "failed": ExitCode.FAILED,
    "auth_failed": ExitCode.AUTH_REFUSED,
    "budget_exceeded": ExitCode.BUDGET_EXCEEDED,
    "interrupted": ExitCode.INTERRUPTED,
}
"""A stored run's status (``quantcrew.crew.runs.STATUSES`` but ``running``) and its exit code."""


def exit_for_status(status: str, *, allow_degraded: bool = False) -> ExitCode:
    """The exit code of a run that ended with ``status``; ``allow_degraded`` makes ``degraded`` exit 0."""
    code = RUN_STATUS_EXIT.get(status, ExitCode.FAILED)
    return ExitCode.OK if code is ExitCode.DEGRADED and allow_degraded else code


def exit_for_error(exc: BaseException) -> ExitCode:
    """The exit code for an error that stopped a command: the ML client's errors by what they say."""
    from quantcrew.tools.errors import MLRequestRejected, MLServerTimeout, MLServerUnavailable, Unauthorized

    if isinstance(exc, Unauthorized):
        return ExitCode.AUTH_REFUSED
    if isinstance(exc, MLServerUnavailable | MLServerTimeout):
        return ExitCode.SERVER_UNREACHABLE
    if isinstance(exc, MLRequestRejected):
        return ExitCode.BAD_INPUT
    return ExitCode.FAILED


def fail(console: Console, message: str, code: int) -> NoReturn:
    """Print ``message`` in red on ``console`` (as text: a path or a bracket is never read as markup) and exit."""
    console.print(f"[red]{escape(message)}[/red]", highlight=False)
    raise typer.Exit(int(code))
