"""One table of exit codes: the README's is the module's, and errors and statuses map onto it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quantcrew.cli.exits import MEANINGS, RUN_STATUS_EXIT, ExitCode, exit_for_error, exit_for_status
from quantcrew.crew.runs import STATUSES
from quantcrew.tools.errors import (
    CircuitOpenError,
    InvalidModelInput,
    MLServerFault,
    MLServerTimeout,
    MLServerUnavailable,
    NotFound,
    Unauthorized,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_rows() -> list[tuple[int, str, str]]:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Exit codes and run statuses", 1)[1].split("\n- ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+) \| (.+) \|$", section, flags=re.MULTILINE)
    return [(int(code), meaning, status) for code, meaning, status in rows]


def test_the_readme_table_is_the_modules_table_in_order() -> None:
    assert [(code, meaning) for code, meaning, _ in _readme_rows()] == [(int(c), m) for c, m in MEANINGS.items()]
    assert set(MEANINGS) == set(ExitCode)


def test_the_readme_names_the_status_each_code_stores() -> None:
    stored = {code: status.strip("`") for code, _, status in _readme_rows() if status != "none"}
    assert stored == {int(code): status for status, code in RUN_STATUS_EXIT.items()}


def test_every_finished_run_status_has_an_exit_code() -> None:
    assert set(RUN_STATUS_EXIT) == set(STATUSES) - {"running"}


@pytest.mark.parametrize(("status", "allow", "code"), [
    ("succeeded", False, 0), ("degraded", False, 4), ("degraded", True, 0), ("failed", True, 1),
    ("auth_failed", True, 5), ("budget_exceeded", False, 3), ("interrupted", False, 130), ("unknown", False, 1),
])
def test_a_run_status_gives_its_exit_code(status: str, allow: bool, code: int) -> None:
    assert exit_for_status(status, allow_degraded=allow) == code


@pytest.mark.parametrize(("error", "code"), [
    (Unauthorized("missing or invalid API key", status_code=401, code="unauthorized"), ExitCode.AUTH_REFUSED),
    (MLServerUnavailable("connection refused"), ExitCode.SERVER_UNREACHABLE),
    (CircuitOpenError("open", retry_in_s=1.0, failures=3), ExitCode.SERVER_UNREACHABLE),
    (MLServerTimeout("read timeout"), ExitCode.SERVER_UNREACHABLE),
    (InvalidModelInput("data.close: must be positive", status_code=422, code="invalid_input"), ExitCode.BAD_INPUT),
    (NotFound("no model", status_code=404, code="not_found"), ExitCode.BAD_INPUT),
    (MLServerFault("boom", status_code=500, code="internal_error"), ExitCode.FAILED),
    (RuntimeError("anything else"), ExitCode.FAILED),
])
def test_a_client_error_gives_the_exit_code_that_names_it(error: BaseException, code: ExitCode) -> None:
    assert exit_for_error(error) is code
