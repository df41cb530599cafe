"""`GET /api/v2/openapi.json`: the OpenAPI 3.1 document of exactly what /api/v2 serves.

Generated from the models the views build (api/_v2_models.py) and the operation table below,
which names every route api/_v2.py answers; nothing is copied from the published contract.
Auth is `Authorization: Bearer` in both modes (an API key, or a Google ID token).
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from comfyburst.api._v2_models import (
    V2Asset,
    V2AssetUpload,
    V2ErrorEnvelope,
    V2FromHashBody,
    V2Job,
    V2JobList,
    V2SubmitBody,
    V2Workflow,
)
from comfyburst.api._v2_submit import MAX_KEY_CHARS
from comfyburst.api._v2_views import PREFIX
from comfyburst.domain.job_logs import MAX_LOG_BYTES, MAX_LOG_LINES
from comfyburst.domain.labels import MAX_FILTERS
from comfyburst.services.job_list import MAX_PAGE_SIZE, MAX_TOKEN_CHARS

_REF = "#/components/schemas/{model}"
_MODELS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (V2SubmitBody, "validation"),
    (V2FromHashBody, "validation"),
    (V2AssetUpload, "validation"),
    (V2Job, "serialization"),
    (V2JobList, "serialization"),
    (V2Workflow, "serialization"),
    (V2Asset, "serialization"),
    (V2ErrorEnvelope, "serialization"),
]
# Every operation may answer these (no or refused credentials, our own failure).
_ALWAYS = (401, 403, 500, 503)
_ERROR_TEXTS = {
    400: "Malformed request (`details.field` names the field)",
    401: "`unauthorized`: no credentials",
    403: "`forbidden`: credentials not accepted",
    404: "`not_found`: no such resource, or not the caller's (the same answer)",
    405: "Method not allowed on this path",
    409: "`hash_mismatch`: the bytes' blake3 is not `expected_hash`; `contended`; or "
    "`environment_building` (comfyburst.environment is not built yet)",
    411: "`length_required`: the upload has no Content-Length",
    413: "Request too large",
    422: "`invalid_workflow` (details.node_errors), `workflow_format_ui`, `missing_asset`, "
    "`idempotency_key_reuse`, `metadata_invalid`, `invalid_metadata_filter`, `invalid_request`",
    429: "`queue_full` or `too_many_streams`; retry after Retry-After seconds",
    500: "`upstream_error` (generic message)",
    501: "`not_implemented` in this deployment",
    503: "`upstream_error`: a dependency is unavailable; retry",
}
_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer", "minimum": 0}}}
_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,80}$"}
_HASH = {"type": "string", "pattern": r"^blake3:[0-9a-f]{64}$"}


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Single-use for 24 h: a second request with the key answers 422 "
    "`idempotency_key_reuse`; a refused request leaves the key unused",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": "^[!-~]+$"},
}
# Uploads are content-addressed: a repeat is answered with the asset held, whatever its key.
_UPLOAD_KEY = {
    **_IDEMPOTENCY,
    "description": "Accepted, not enforced: the same bytes again answer the asset held "
    "(200, `created_new: false`)",
}

_METADATA_FILTER = {
    "name": "metadata",
    "in": "query",
    "required": False,
    "style": "deepObject",
    "explode": True,
    "description": f"`metadata[<key>]=<value>`: jobs carrying every such label (at most "
    f"{MAX_FILTERS}); 422 `invalid_metadata_filter` otherwise",
    "schema": {"type": "object", "additionalProperties": {"type": "string"}},
}

# (method, path, operationId, summary, parameters, request body, {status: answer}, errors)
_Op = tuple[str, str, str, str, list[dict[str, Any]], Any, dict[int, Any], tuple[int, ...]]


def _operations() -> list[_Op]:
    job_id = [_path_param("job_id", _ID)]
    asset_id = [_path_param("asset_id", _ID)]
    return [
        ("post", "/jobs", "submitJob", "Submit an API-format workflow", [_IDEMPOTENCY],
         ("json", "V2SubmitBody"), {201: "V2Job"}, (400, 409, 413, 422, 429)),
        ("get", "/jobs", "listJobs", "The caller's jobs, newest first, paged",
         [_query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE}, "Page size"),
          _query("cursor", {"type": "string", "minLength": 1, "maxLength": MAX_TOKEN_CHARS},
                 "next_cursor of the previous page"),
          _METADATA_FILTER],
         None, {200: "V2JobList"}, (400, 422)),
        ("get", "/jobs/{job_id}", "getJob", "One job", job_id, None, {200: "V2Job"}, (404,)),
        ("post", "/jobs/{job_id}/cancel", "cancelJob", "Cancel (a finished job: a no-op)",
         job_id, None, {200: "V2Job"}, (404, 409)),
        ("get", "/jobs/{job_id}/events", "streamJobEvents",
         "Server-Sent Events: status, progress, preview, output; ends after the terminal "
         "status",
         job_id, None, {200: "sse"}, (404, 429, 501)),
        ("get", "/jobs/{job_id}/logs", "getJobLogs",
         f"The tail of what ComfyUI printed while the job ran (text, at most {MAX_LOG_LINES} "
         f"lines and {MAX_LOG_BYTES} bytes); 204 while there is none",
         job_id, None, {200: "text", 204: None}, (404,)),
        ("get", "/jobs/{job_id}/workflow", "getJobWorkflow", "The API-format graph it ran",
         job_id, None, {200: "V2Workflow"}, (404,)),
        ("post", "/assets", "uploadAsset", "Upload bytes (multipart); blake3 computed on arrival",
         [_UPLOAD_KEY], ("multipart", "V2AssetUpload"), {200: "V2Asset", 201: "V2Asset"},
         (400, 409, 411, 413, 422)),
        ("post", "/assets/from-hash", "assetFromHash", "The caller's asset of bytes it holds",
         [], ("json", "V2FromHashBody"), {200: "V2Asset"}, (400, 404, 422)),
        ("head", "/assets/by-hash/{hash}", "headAssetByHash",
         "200 when the caller holds these bytes; a miss and another caller's are both 404",
         [_path_param("hash", _HASH)], None, {200: None}, (404,)),
        ("get", "/assets/{asset_id}", "getAsset", "An asset with a freshly signed URL",
         asset_id, None, {200: "V2Asset"}, (404,)),
        ("delete", "/assets/{asset_id}", "deleteAsset", "Delete an uploaded asset",
         asset_id, None, {204: None}, (404, 409)),
        ("get", "/assets/{asset_id}/content", "getAssetContent", "302 to a fresh signed URL",
         asset_id, None, {302: "redirect"}, (404,)),
    ]  # fmt: skip


def _answer(kind: Any, refs: dict[str, Any]) -> dict[str, Any]:
    if kind is None:
        return {"description": "No body"}
    if kind == "text":
        return {"description": "Plain text",
                "content": {"text/plain": {"schema": {"type": "string"}}}}  # fmt: skip
    if kind == "sse":
        return {"description": "The event stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}}  # fmt: skip
    if kind == "redirect":
        location = {"schema": {"type": "string"}, "description": "A signed URL of the bytes"}
        return {"description": "Redirect", "headers": {"Location": location}}
    return {"description": kind, "content": {"application/json": {"schema": refs[kind]}}}


def _error(status: int, refs: dict[str, Any], *, head: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": _ERROR_TEXTS[status]}
    if not head:  # HEAD answers carry no body
        answer["content"] = {"application/json": {"schema": refs["V2ErrorEnvelope"]}}
    if status in (429, 503):
        answer["headers"] = _RETRY_AFTER
    return answer


def _body(kind: Any, refs: dict[str, Any]) -> dict[str, Any] | None:
    if kind is None:
        return None
    media, model = kind
    content_type = "application/json" if media == "json" else "multipart/form-data"
    return {"required": True, "content": {content_type: {"schema": refs[model]}}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The /api/v2 document (built once per process)."""
    keys, schemas = models_json_schema(_MODELS, ref_template=_REF)
    refs = {model.__name__: schema for (model, _mode), schema in keys.items()}
    paths: dict[str, Any] = {}
    for method, path, op_id, summary, params, body, answers, errors in _operations():
        responses = {str(s): _answer(kind, refs) for s, kind in answers.items()}
        for status in (*errors, 405, *_ALWAYS):
            responses[str(status)] = _error(status, refs, head=method == "head")
        operation: dict[str, Any] = {"operationId": op_id, "summary": summary,
                                     "parameters": params, "responses": responses}  # fmt: skip
        request_body = _body(body, refs)
        if request_body is not None:
            operation["requestBody"] = request_body
        paths.setdefault(PREFIX + path, {})[method] = operation
    paths[PREFIX + "/openapi.json"] = {
        "get": {
            "operationId": "openapiV2",
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "This document",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}},
        }
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ComfyBurst: Comfy API v2",
            "version": "2.0.0",
            "description": "Comfy API v2 as ComfyBurst serves it (for the comfy-sdk client); "
            "our own API is described at /openapi.json.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
