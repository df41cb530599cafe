"""Live preview: the latest frame of the caller's running job (what the worker last wrote).

Nothing of it is in Firestore: the job is read for tenancy and state, the frame from the
outputs bucket. A job that is not running has no preview (the worker deletes the object when
the run ends; one left behind by a lost VM is never handed out).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

from comfyburst.domain.previews import preview_object, preview_type
from comfyburst.domain.tenancy import can_see
from comfyburst.ports import BlobStore, JobStore
from comfyburst.schema import Job
from comfyburst.services.status import job_not_found
from comfyburst.states import JobState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreviewImage:
    data: bytes
    content_type: str


def get_preview(
    store: JobStore,
    blobs: BlobStore,
    outputs_bucket: str,
    job_id: str,
    *,
    caller: str | None,
    admins: Collection[str] = (),
) -> PreviewImage | None:
    """The running job's latest preview, None when it has none; NotFound for an unknown job
    and for another caller's job alike."""
    job = store.get_job(job_id)
    if job is None or not can_see(caller, job, admins):
        raise job_not_found(job_id)
    return latest_preview(blobs, outputs_bucket, job)


def latest_preview(blobs: BlobStore, outputs_bucket: str, job: Job) -> PreviewImage | None:
    """The latest preview of `job`, already read and found the caller's; None unless running."""
    if job.state is not JobState.RUNNING:
        return None
    job_id = job.job_id
    data = blobs.read(outputs_bucket, preview_object(job_id))
    if data is None:
        return None
    content_type = preview_type(data)
    if content_type is None:
        # The worker writes only checked frames: this object is not one; never serve it.
        logger.warning("preview of %s is not an image it may be", job_id, extra={"job_id": job_id})
        return None
    return PreviewImage(data, content_type)
