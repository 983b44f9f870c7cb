"""A job manager with real worker threads on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from quantcrew.ml_server.jobs import JobManager


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "registry.db"


@pytest.fixture
def manager(db_path: Path) -> Iterator[JobManager]:
    jobs = JobManager(db_path, workers=1)
    yield jobs
    jobs.shutdown(timeout_s=2.0)
