"""What a running job sees: its id, a progress reporter and the cancel flag.

Progress reports are kept in memory on every call and handed on for writing at most every
:data:`REPORT_INTERVAL_S` seconds, so a training loop may report on every step.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from quantcrew.ml_server.schemas.jobs import JobProgress

__all__ = ["REPORT_INTERVAL_S", "JobCancelled", "JobContext", "JobFn", "progress_fraction"]

REPORT_INTERVAL_S = 0.5
"""Least time between two progress writes to the database for one job."""


class JobCancelled(Exception):
    """Raised by a job function that has seen :attr:`JobContext.cancelled`; the job ends 'cancelled'.

    A message, when given, becomes the job's last progress message.
    """


class JobContext:
    """What a running job sees: its id, a progress reporter and the cancel flag.

    The manager builds one per job. A test of a job function can build one directly
    (``JobContext("job-test")``), call the function, and read :attr:`progress` afterwards.

    Args:
        job_id: The job's id.
        on_persist: Called with this context when a report should be written (throttled).
        interval_s: Least time between two ``on_persist`` calls.
    """

    def __init__(self, job_id: str, *, on_persist: Callable[[JobContext], None] | None = None,
                 interval_s: float = REPORT_INTERVAL_S) -> None:
        self.job_id = job_id
        self._on_persist = on_persist
        self._interval_s = interval_s
        self._cancel = threading.Event()
        self._progress = JobProgress(done=0, total=0, fraction=0.0)
        self._last_persist = -math.inf

    def report(self, *, done: int, total: int, message: str | None = None,
               metrics: dict[str, float] | None = None) -> None:
        """Record progress; cheap enough to call on every step.

        Args:
            done: Units of work done (clipped at 0).
            total: Units of work in all (0 while unknown).
            message: A note for a person; None keeps the previous one.
            metrics: Latest metric values, merged into those reported before. NaN and
                infinite values are skipped (JSON cannot carry them).
        """
        merged = dict(self._progress.metrics)
        for key, value in (metrics or {}).items():
            number = float(value)
            if math.isfinite(number):
                merged[str(key)] = number
        done, total = max(0, int(done)), max(0, int(total))
        # one reference swap: readers on other threads see the old or the new report, never half of one
        self._progress = JobProgress(
            done=done, total=total, fraction=progress_fraction(done, total),
            message=message if message is not None else self._progress.message,
            metrics=merged, updated_at=datetime.now(UTC),
        )
        now = time.monotonic()
        if self._on_persist is not None and now - self._last_persist >= self._interval_s:
            self._last_persist = now
            self._on_persist(self)

    @property
    def cancelled(self) -> bool:
        """True once cancellation was requested; the function should stop soon after."""
        return self._cancel.is_set()

    @property
    def progress(self) -> JobProgress:
        """The latest report (whether or not it was written yet)."""
        return self._progress

    def request_cancel(self) -> None:
        """Set the cancel flag (the manager does this on :meth:`JobManager.cancel`)."""
        self._cancel.set()


JobFn = Callable[[JobContext], dict[str, Any]]
"""A job: takes its context, returns a JSON-able result dict."""


def progress_fraction(done: int, total: int) -> float:
    """``done / total`` clipped to at most 1; 0 while ``total`` is unknown (0).

    Args:
        done: Units of work done.
        total: Units of work in all.

    Returns:
        The fraction shown as :attr:`JobProgress.fraction`.
    """
    return min(1.0, done / total) if total > 0 else 0.0
