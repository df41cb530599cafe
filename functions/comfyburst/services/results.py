"""Result messages: built once when a job turns terminal, stored on the job, published once.

Every path that ends a job (done-flag trigger, reaper, cancel of a queued job) goes through
`finish` inside its `update_job` transaction and then `publish_result`. The message is stored
with the terminal state, so a retried publish sends the same bytes, and `result_published_at`
records that it went out. Delivery stays at least once: consumers dedupe on job_id + status.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any

from comfyburst.domain.jobs import result_timings, transition
from comfyburst.ports import JobStore, Publisher, UrlSigner
from comfyburst.schema import Job, ResultMessage, ResultOutput
from comfyburst.services._ops_log import log_job_ended
from comfyburst.states import JobState

log = logging.getLogger(__name__)

WEBHOOK_ATTRIBUTE = "webhook"  # set on results of jobs with a webhook_url


def split_gs_uri(uri: str) -> tuple[str, str]:
    """('bucket', 'object/name') of a gs:// URI; ValueError when it is not one."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket or not name:
        raise ValueError(f"gs:// URI without bucket or object: {uri!r}")
    return bucket, name


def build_result(job: Job, signer: UrlSigner | None, ttl_s: int | None = None) -> ResultMessage:
    """The result message of a terminal job, with signed URLs for its outputs (when a signer
    is given; otherwise consumers get fresh URLs from GET /jobs/{id})."""
    ttl = ttl_s if ttl_s is not None else job.options.signed_url_ttl_s
    outputs: list[ResultOutput] = []
    for output in job.outputs:
        if output.gs_uri is None:
            continue  # nothing a consumer could fetch
        url = output.signed_url
        if signer is not None and url is None:
            url = signer.sign_get(*split_gs_uri(output.gs_uri), ttl)
        outputs.append(
            ResultOutput(
                name=output.name,
                gs_uri=output.gs_uri,
                signed_url=url,
                content_type=output.content_type,
                size_bytes=output.size_bytes,
            )
        )
    return ResultMessage(
        job_id=job.job_id,
        status=job.state,
        outputs=outputs,
        error=job.error,
        timings=result_timings(job),
        attempt=job.attempt,
        phases=job.phases,
        receipt=job.receipt,  # the VM's idle after the job comes later, on the job only
    )


def encode_result(message: ResultMessage) -> bytes:
    """The message body as published (deterministic for equal messages)."""
    return message.model_dump_json().encode()


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def with_result(job: Job, message: ResultMessage) -> Job:
    """The job carrying the message it will publish, and that message's body hash."""
    return job.model_copy(
        update={"result": message, "result_sha256": body_sha256(encode_result(message))}
    )


def finish(
    job: Job,
    target: JobState,
    now: datetime,
    signer: UrlSigner | None = None,
    **changes: Any,
) -> Job:
    """Pure: the job moved to terminal `target` (through the table) with its result message.

    Use inside `update_job`; pass a signer only if signing is cheap and side-effect free
    (the done-flag trigger signs before its transaction and passes a lookup).
    """
    if not target.terminal:
        raise ValueError(f"finish() needs a terminal state, not {target.value}")
    ended = transition(job, target, now, **changes)
    return with_result(ended, build_result(ended, signer))


def publish_result(store: JobStore, publisher: Publisher, job: Job, now: datetime) -> Job:
    """Publish the stored result of a terminal job unless already published; mark it published.

    Raises whatever the publisher raises, leaving the job unmarked so a retry publishes the
    same stored message.
    """
    if not job.state.terminal:
        raise ValueError(f"job {job.job_id} is {job.state.value}, not terminal")
    if job.result_published_at is not None:
        return job
    message = job.result or build_result(job, None)
    body = encode_result(message)
    digest = body_sha256(body)
    if job.result_sha256 is not None and job.result_sha256 != digest:
        # The stored message is still the one to send; the hash mismatch means a codec drift.
        log.error(
            "result of job %s re-encodes differently (%s != %s)",
            job.job_id,
            digest,
            job.result_sha256,
        )
    attributes = message.attributes()
    if job.webhook_url:
        # Lets the webhooks subscription filter on it: only these reach the delivery function.
        attributes[WEBHOOK_ATTRIBUTE] = "1"
    publisher.publish(body, attributes)
    fields: dict[str, object] = {"result_published_at": now, "result_sha256": digest}
    if job.result is None:
        fields["result"] = message.model_dump(mode="json")
    store.patch_job(job.job_id, fields)
    log_job_ended(job)
    return job.model_copy(
        update={"result": message, "result_sha256": digest, "result_published_at": now}
    )
