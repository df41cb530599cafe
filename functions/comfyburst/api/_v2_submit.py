"""`POST /api/v2/jobs`: a v2 body as our job request, through the one submit service.

The body is `workflow` (API format; `core/ASSET` references staged by api/_v2_inputs.py),
`metadata` (the job's labels, domain/labels.py: 422 `metadata_invalid` naming the key),
`extra_data` (partner-node keys: refused, nothing here runs partner nodes with a caller's key)
and `comfyburst`, our documented extension: `models`, `gpu_class`, `environment`, `timeout_s`
and `webhook_url`, mapped onto our request's `models`, `options.*` and `webhook_url`, so the
one JobRequest model and request policy check them. A refusal of an extension field names it
as the caller wrote it (`comfyburst.timeout_s`). Every check runs before anything is written.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from comfyburst.api._v2_errors import V2Error
from comfyburst.api._v2_inputs import stage as stage_inputs
from comfyburst.api._v2_models import EXTENSION_KEY, V2Extension
from comfyburst.domain.json_safety import parse_json_body
from comfyburst.domain.labels import LabelError, check_labels
from comfyburst.errors import InvalidRequest
from comfyburst.schema import Job
from comfyburst.services import submit

_BODY_KEYS = frozenset({"workflow", "extra_data", "metadata", EXTENSION_KEY})
# Keeps v2's single-use keys apart from our own API's replaying ones.
KEY_NAMESPACE = "v2:"
# A key's claim lasts this long (the contract's 24 h). Keys are claimed per window of this
# length (UTC epoch multiples): the window joins the key that derives the job id, and a claim
# of the window before that is younger than this still refuses the key.
KEY_TTL = timedelta(hours=24)
# The served document's bound; with the namespace and window within our own API's.
MAX_KEY_CHARS = 200
# Where each extension field goes in our request, and back (for naming refused fields).
_OPTIONS = ("gpu_class", "environment", "timeout_s")
_TOP = ("models", "webhook_url")


def submit_v2(api: Any, body: bytes, caller: str | None, idempotency_key: str | None) -> Job:
    """The job a v2 body makes; 422 `idempotency_key_reuse` when the key was used before."""
    claim = None if idempotency_key is None else _claim(api, caller, idempotency_key)
    data = parse_json_body(body)
    if not isinstance(data, dict) or not isinstance(data.get("workflow"), dict):
        raise V2Error(
            "invalid_workflow", 422, "the body must be an object with a workflow object",
            field="workflow",
        )  # fmt: skip
    unknown = sorted(set(data) - _BODY_KEYS)
    if unknown:
        raise V2Error(
            "invalid_request", 422, f"unknown field {unknown[0][:100]!r}", field=unknown[0][:100]
        )
    labels = _labels(data.get("metadata"))
    if data.get("extra_data") not in (None, {}):
        raise V2Error(
            "invalid_request", 422, "extra_data (partner-node keys) is not supported here",
            field="extra_data",
        )  # fmt: skip
    ours = _extension(data.get(EXTENSION_KEY))
    workflow = data["workflow"]
    if _ui_format(workflow):
        raise V2Error(
            "workflow_format_ui", 422,
            "this is a UI-format workflow (nodes/links); submit the API-format graph "
            "(ComfyUI: Export (API))",
            field="workflow",
        )  # fmt: skip
    # Each core/ASSET reference becomes one of the job's input files (api/_v2_inputs.py).
    staged, inputs = stage_inputs(api, caller, workflow)
    ours["workflow"] = staged
    if inputs:
        ours["inputs"] = inputs
    try:
        result = submit.submit_job(
            api.submit_deps(),
            json.dumps(ours, separators=(",", ":")).encode(),
            idempotency_key=claim,
            caller=caller,
            labels=labels,
        )
    except InvalidRequest as exc:
        raise _as_written(exc) from None
    if not result.created:
        raise _reused()
    return result.job


def _claim(api: Any, caller: str | None, key: str) -> str:
    """Our key for a v2 key: in this window, unless the window before claimed it < 24 h ago."""
    submit.check_idempotency_key(key, MAX_KEY_CHARS)
    now = api.clock.now()
    window = int(now.timestamp() // KEY_TTL.total_seconds())
    # Any body, valid or not, with a claimed key is refused as such (a claim made meanwhile is
    # found by the submit itself: created False).
    ids = [submit.keyed_job_id(caller, _windowed(key, w)) for w in (window, window - 1)]
    if any(now - job.created_at < KEY_TTL for job in api.store.get_jobs(ids)):  # one round trip
        raise _reused()
    return _windowed(key, window)


def _windowed(key: str, window: int) -> str:
    return f"{KEY_NAMESPACE}{window}:{key}"


def _reused() -> V2Error:
    return V2Error(
        "idempotency_key_reuse", 422, "this Idempotency-Key was used in the last 24 h (single-use)"
    )


def _labels(raw: Any) -> dict[str, str]:
    try:
        return check_labels(raw)
    except LabelError as exc:
        field = "metadata" if exc.key is None else f"metadata.{exc.key}"
        raise V2Error("metadata_invalid", 422, exc.message, field=field) from None


def _extension(raw: Any) -> dict[str, Any]:
    """Our request's fields from the extension object (checked later, by the one model)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise V2Error(
            "invalid_request", 422, f"{EXTENSION_KEY} must be an object", field=EXTENSION_KEY
        )
    unknown = sorted(set(raw) - set(V2Extension.model_fields))
    if unknown:
        name = f"{EXTENSION_KEY}.{unknown[0][:100]}"
        raise V2Error("invalid_request", 422, f"unknown field {name!r}", field=name)
    ours: dict[str, Any] = {k: raw[k] for k in _TOP if raw.get(k) is not None}
    options = {k: raw[k] for k in _OPTIONS if raw.get(k) is not None}
    if options:
        ours["options"] = options
    return ours


def _as_written(exc: InvalidRequest) -> InvalidRequest:
    """`exc` with an extension field named as the caller wrote it (`comfyburst.…`)."""
    theirs = _theirs(exc.field)
    if exc.field is None or theirs is None:
        return exc
    exc.message = exc.message.replace(exc.field, theirs, 1)
    exc.field = theirs
    if isinstance(exc.details, list):
        exc.details = [
            {**d, "field": _theirs(d["field"]) or d["field"]}
            if isinstance(d, dict) and isinstance(d.get("field"), str)
            else d
            for d in exc.details
        ]
    return exc


def _theirs(field: str | None) -> str | None:
    """The extension's name of one of our request's fields; None for the others."""
    head = (field or "").split(".", 1)[0]
    if field is None or head not in ("options", *_TOP):
        return None
    if head == "options":
        return EXTENSION_KEY + field[len("options") :]
    return f"{EXTENSION_KEY}.{field}"


def _ui_format(workflow: dict[str, Any]) -> bool:
    """A UI export (the editor's save format) rather than the API-format graph."""
    return isinstance(workflow.get("nodes"), list) and (
        "links" in workflow or "last_node_id" in workflow
    )
