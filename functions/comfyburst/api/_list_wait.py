"""The read routes that go beyond one document read: `GET /jobs` (the caller's jobs) and
`GET /jobs/{id}?wait_s=N` (answer when the job changes)."""

from __future__ import annotations

from typing import Any

from comfyburst.api._auth import admin_principals
from comfyburst.api.views import JobList, JobView
from comfyburst.domain import tenancy
from comfyburst.errors import ComfyBurstError
from comfyburst.schema import Job
from comfyburst.services import job_list, job_wait
from comfyburst.services.status import refresh_urls


class ServiceUnavailable(ComfyBurstError):
    """A part of the API this deployment was not wired with."""

    code = "unavailable"
    http_status = 503


def list_view(api: Any, args: Any, caller: str | None) -> JobList:
    """One page of the jobs `caller` may see (the tenancy rule: their own; an admin's: all)."""
    admins = admin_principals(api.settings)
    key = api.page_token_key.get()
    query = job_list.parse_query(
        args, caller, all_callers=tenancy.is_admin(caller, admins), token_key=key
    )
    page = job_list.list_jobs(api.views, query, key)
    return JobList(
        jobs=[JobView.of(job) for job in page.jobs], next_page_token=page.next_page_token
    )


def waited(api: Any, job: Job, wait_s: float | None) -> Job:
    """The job after `wait_s` (if given): changed, or as it is when the time ran out."""
    if wait_s is None:
        return job
    current = job_wait.wait_for_change(api.views, job, wait_s)
    if current is job:
        return job
    outputs, _changed = refresh_urls(current, api.signer, api.clock.now())
    return current.model_copy(update={"outputs": outputs})
