"""Status: a job as its caller sees it, with signed output URLs that are still good to use."""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime, timedelta

from comfyburst.domain.tenancy import can_see
from comfyburst.errors import NotFound
from comfyburst.ports import Clock, JobStore, UrlSigner
from comfyburst.schema import Job, OutputFile
from comfyburst.services.results import split_gs_uri

logger = logging.getLogger(__name__)

# A URL that expires sooner than this is re-signed, so a caller has time to download.
REFRESH_MARGIN_S = 300


def job_not_found(job_id: str) -> NotFound:
    """The one answer for a job that does not exist or is not the caller's: the same body."""
    return NotFound(f"job {job_id} not found")


def get_job(
    store: JobStore,
    signer: UrlSigner,
    clock: Clock,
    job_id: str,
    *,
    caller: str | None,
    admins: Collection[str] = (),
) -> Job:
    """The caller's job with fresh signed URLs on its outputs; NotFound for an unknown id and
    for another caller's job alike (no URL is signed for it)."""
    job = store.get_job(job_id)
    if job is None or not can_see(caller, job, admins):
        raise job_not_found(job_id)
    now = clock.now()
    outputs, changed = refresh_urls(job, signer, now)
    if not changed:
        return job
    try:
        # Keeping the URLs saves re-signing on every poll; losing this write costs nothing.
        store.patch_job(job_id, {"outputs": [o.model_dump(mode="python") for o in outputs]})
    except Exception:
        logger.warning("could not store refreshed URLs", exc_info=True, extra={"job_id": job_id})
    return job.model_copy(update={"outputs": outputs})


def refresh_urls(job: Job, signer: UrlSigner, now: datetime) -> tuple[list[OutputFile], bool]:
    """The outputs with a signed URL each that is valid for at least REFRESH_MARGIN_S."""
    ttl_s = job.options.signed_url_ttl_s
    margin = timedelta(seconds=REFRESH_MARGIN_S)
    outputs: list[OutputFile] = []
    changed = False
    for output in job.outputs:
        expires = output.signed_url_expires_at
        fresh = output.signed_url is not None and expires is not None and expires - now > margin
        if fresh or output.gs_uri is None:
            outputs.append(output)
            continue
        url = signer.sign_get(*split_gs_uri(output.gs_uri), ttl_s)
        outputs.append(
            output.model_copy(
                update={
                    "signed_url": url,
                    "signed_url_expires_at": now + timedelta(seconds=ttl_s),
                }
            )
        )
        changed = True
    return outputs, changed
