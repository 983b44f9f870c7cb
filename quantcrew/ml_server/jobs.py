"""Long-running work (RL training) as jobs: submitted, polled, cancelled; kept in SQLite.

Skeleton: the contract below is fixed; the implementation is being written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["JobContext", "JobFn", "JobManager"]


class JobContext:
    """What a running job sees: its id, a progress reporter and the cancel flag."""

    job_id: str

    def report(self, *, done: int, total: int, message: str | None = None,
               metrics: dict[str, float] | None = None) -> None:
        raise NotImplementedError

    @property
    def cancelled(self) -> bool:
        raise NotImplementedError


JobFn = Callable[[JobContext], dict[str, Any]]


class JobManager:
    """Runs jobs on worker threads and records them in the ``jobs`` table of ``db_path``."""

    def __init__(self, db_path: Path, *, workers: int = 1) -> None:
        self.db_path = Path(db_path)
        self.workers = workers

    def shutdown(self, *, timeout_s: float = 10.0) -> None:
        """Cancel running jobs, wait up to ``timeout_s`` for them, close the database."""
