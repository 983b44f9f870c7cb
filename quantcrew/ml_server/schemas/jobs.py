"""Wire contract of jobs: long work (RL training, walk-forward training) run in the background.

A route that starts long work validates its input, submits a job and replies at once with a
:class:`JobInfo`; the client then polls ``GET /v1/jobs/{job_id}`` and may cancel with
``DELETE /v1/jobs/{job_id}``. Pydantic only: the agent-side client imports this module.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from quantcrew.ml_server.schemas.common import ErrorDetail, FiniteFloat, WireModel

__all__ = ["FINISHED_STATUSES", "JOB_STATUSES", "JobInfo", "JobList", "JobProgress", "JobStatus"]

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")

FINISHED_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
"""Statuses a job never leaves: polling can stop, cancelling is a conflict."""


class JobProgress(WireModel):
    """How far a job has come, as last reported by the job itself."""

    done: int = Field(ge=0, description="Units of work done so far (e.g. timesteps, folds).")
    total: int = Field(ge=0, description="Units of work in all; 0 while unknown.")
    fraction: float = Field(ge=0.0, le=1.0, description="done / total, clipped to [0, 1]; 0 while total is 0.")
    message: str | None = Field(default=None, description="Latest human-readable note from the job.")
    metrics: dict[str, FiniteFloat] = Field(
        default_factory=dict, description="Latest value of each metric the job reports, e.g. episode_reward.")
    updated_at: datetime | None = Field(default=None, description="When the job last reported progress (UTC).")


class JobInfo(WireModel):
    """One job: what it is, where it stands, and its result or error once finished."""

    job_id: str = Field(description="Id to poll and cancel the job with ('job-' + 16 hex digits).")
    kind: str = Field(description="What the job does, e.g. 'rl_train'.")
    status: JobStatus = Field(
        description="queued -> running -> succeeded | failed | cancelled; 'interrupted' when the server stopped "
                    "before the job finished.")
    cancel_requested: bool = Field(
        description="True once cancellation was asked for; a running job stops at its next check.")
    created_at: datetime = Field(description="When the job was submitted (UTC).")
    started_at: datetime | None = Field(default=None, description="When a worker started it (UTC); null while queued.")
    finished_at: datetime | None = Field(default=None, description="When it reached a finished status (UTC).")
    progress: JobProgress = Field(description="Latest progress report.")
    params: dict[str, Any] = Field(default_factory=dict, description="Summary of the job's inputs, as submitted.")
    result: dict[str, Any] | None = Field(
        default=None, description="What the job returned (e.g. the stored model's id); null until it returns.")
    error: ErrorDetail | None = Field(default=None, description="Why it failed or was interrupted; null otherwise.")


class JobList(WireModel):
    """Jobs, newest first."""

    jobs: list[JobInfo] = Field(description="Matching jobs, newest first.")
