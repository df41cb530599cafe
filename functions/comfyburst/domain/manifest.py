"""Pure rules for done flags: which objects are done flags, parsing a manifest, output places,
and the bounded forms of the error a worker reports (in its done.json, and on the job)."""

from __future__ import annotations

import json
import re

from pydantic import ValidationError

from comfyburst.domain.json_safety import clip, clip_to, stored_json
from comfyburst.errors import ManifestInvalid
from comfyburst.schema import MAX_STORED_NODE_ERRORS_BYTES, DoneManifest, JobError, OutputFile

DONE_FLAG_NAME = re.compile(r"^jobs/(?P<job_id>[A-Za-z0-9][A-Za-z0-9_.\-]{0,127})/done\.json$")
MAX_MANIFEST_BYTES = 1_000_000
# A job document holds its error twice (the job's and its result message's), beside the
# request summary and the outputs, within Firestore's 1 MiB: each copy stays far below.
MAX_ERROR_TEXT_CHARS = 4000
MAX_STORED_DETAILS_BYTES = MAX_STORED_NODE_ERRORS_BYTES
# In done.json: well inside MAX_MANIFEST_BYTES, so a worker's manifest always parses.
MAX_REPORTED_DETAILS_BYTES = 256 * 1024


def done_flag_job_id(object_name: str) -> str | None:
    """The job id of `jobs/{id}/done.json`, or None for any other object."""
    match = DONE_FLAG_NAME.match(object_name)
    return match.group("job_id") if match else None


def output_object(job_id: str, name: str) -> str:
    """Where the worker uploads an output: `jobs/{job_id}/outputs/{name}` (outputs bucket)."""
    return f"jobs/{job_id}/outputs/{name}"


def declared_attempt(raw: bytes) -> int | None:
    """The `attempt` a manifest claims even when it does not validate (to spot stale ones)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    attempt = data.get("attempt") if isinstance(data, dict) else None
    return attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_manifest(raw: bytes, job_id: str) -> DoneManifest:
    """The validated manifest of job `job_id`; ManifestInvalid with a precise reason otherwise."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ManifestInvalid(f"done.json is {len(raw)} bytes, over {MAX_MANIFEST_BYTES}")
    try:
        manifest = DoneManifest.model_validate_json(raw)
    except ValidationError as exc:
        raise ManifestInvalid(
            f"done.json does not match the DoneManifest schema: {_describe(exc)}",
            details=[
                {"loc": [str(p) for p in e["loc"]], "msg": e["msg"]} for e in exc.errors()[:20]
            ],
        ) from None
    if manifest.job_id != job_id:
        raise ManifestInvalid(
            f"done.json at jobs/{job_id}/ names job {manifest.job_id!r}", field="job_id"
        )
    return manifest


def locate_outputs(manifest: DoneManifest, outputs_bucket: str) -> list[OutputFile]:
    """The manifest's outputs with `gs_uri` set to where they must be, in the outputs bucket.

    A `gs_uri` the worker gave is kept only when it lies under this job's output prefix, so
    a manifest can never make us sign URLs for other objects.
    """
    prefix = f"gs://{outputs_bucket}/jobs/{manifest.job_id}/outputs/"
    located = []
    for output in manifest.outputs:
        uri = output.gs_uri
        if uri is None or not uri.startswith(prefix) or ".." in uri[len(prefix) :].split("/"):
            uri = f"gs://{outputs_bucket}/{output_object(manifest.job_id, output.name)}"
        located.append(output.model_copy(update={"gs_uri": uri, "signed_url": None}))
    return located


def _bounded_text(error: JobError) -> dict[str, str | None]:
    """The error's texts, each cut to MAX_ERROR_TEXT_CHARS (lone surrogates replaced)."""
    texts = {
        "type": error.type,
        "message": error.message,
        "node_id": error.node_id,
        "node_type": error.node_type,
    }
    return {
        k: None if v is None else clip(v, max_string=MAX_ERROR_TEXT_CHARS) for k, v in texts.items()
    }


def reported_error(error: JobError) -> JobError:
    """The error as a worker writes it in done.json: its texts cut and its details clipped
    (still JSON values, as ComfyUI sent them), so the manifest stays valid and small."""
    details = None if error.details is None else clip_to(error.details, MAX_REPORTED_DETAILS_BYTES)
    return JobError.model_validate({**_bounded_text(error), "details": details})


def stored_error(error: JobError) -> JobError:
    """The error as a job (and its result message) keeps it: texts cut, and `details` as
    compact JSON text clipped to MAX_STORED_DETAILS_BYTES, the rule submit applies to
    pre-flight node errors: what a worker reports holds JSON Firestore refuses (ComfyUI's
    `input_config` is an array in an array)."""
    details = (
        None if error.details is None else stored_json(error.details, MAX_STORED_DETAILS_BYTES)
    )
    return JobError.model_validate({**_bounded_text(error), "details": details})
