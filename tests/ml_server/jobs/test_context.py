"""The job context alone: progress reports, metrics merging, the cancel flag."""

from __future__ import annotations

import numpy as np

from quantcrew.ml_server.jobs import JobContext


def test_context_alone_merges_metrics_and_clips_fraction() -> None:
    ctx = JobContext("job-test")
    ctx.report(done=2, total=4, message="half", metrics={"reward": 1.0, "loss": 0.5})
    ctx.report(done=9, total=4, metrics={"reward": float("nan"), "entropy": np.float32(0.25)})  # type: ignore[dict-item]
    p = ctx.progress
    assert (p.done, p.total, p.fraction, p.message) == (9, 4, 1.0, "half")
    assert p.metrics == {"reward": 1.0, "loss": 0.5, "entropy": 0.25}
    ctx.report(done=-3, total=0)
    assert (ctx.progress.done, ctx.progress.fraction) == (0, 0.0)
    assert not ctx.cancelled
    ctx.request_cancel()
    assert ctx.cancelled


def test_context_hands_reports_on_at_most_once_per_interval() -> None:
    persisted: list[int] = []
    ctx = JobContext("job-test", on_persist=lambda c: persisted.append(c.progress.done), interval_s=3600.0)
    for step in range(1, 6):
        ctx.report(done=step, total=5)
    assert persisted == [1]  # the first report goes through, the rest wait for the interval
    assert ctx.progress.done == 5
    every = JobContext("job-test", on_persist=lambda c: persisted.append(c.progress.done), interval_s=0.0)
    every.report(done=7, total=9)
    every.report(done=8, total=9)
    assert persisted == [1, 7, 8]
