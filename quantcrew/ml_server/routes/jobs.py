"""Jobs: poll and cancel long work. Jobs are started by the routes that own the work (e.g. POST /v1/rl/train)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from quantcrew.ml_server.deps import ServerDep
from quantcrew.ml_server.routing import ERROR_RESPONSES, ORJSONRoute, model_response
from quantcrew.ml_server.schemas.jobs import JobInfo, JobList, JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"], route_class=ORJSONRoute)

JobIdPath = Annotated[str, Path(min_length=1, max_length=64, description="The id a job-starting route returned.")]


@router.get("", response_model=JobList, responses=ERROR_RESPONSES)
def list_jobs(
    server: ServerDep,
    kind: Annotated[str | None, Query(max_length=64, description="Only jobs of this kind, e.g. 'rl_train'.")] = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most jobs to return.")] = 100,
) -> Response:
    """Jobs newest first, optionally of one kind and one status."""
    jobs = server.jobs
    return model_response(JobList(jobs=jobs.list(kind=kind, status=status, limit=limit)))


@router.get("/{job_id}", response_model=JobInfo, responses=ERROR_RESPONSES)
def get_job(job_id: JobIdPath, server: ServerDep) -> Response:
    """One job: status, progress, and its result or error once finished."""
    jobs = server.jobs
    return model_response(jobs.get(job_id))


@router.delete(
    "/{job_id}", response_model=JobInfo,
    responses={**ERROR_RESPONSES, 202: {"model": JobInfo, "description": "A running job was asked to stop."}},
)
def cancel_job(job_id: JobIdPath, server: ServerDep) -> Response:
    """Cancel a job: 200 when it is cancelled, 202 when a running job was asked to stop at its next check."""
    jobs = server.jobs
    info = jobs.cancel(job_id)
    return model_response(info, status_code=202 if info.status == "running" else 200)
