"""The OpenAPI 3.1 document, generated from the same pydantic models the API uses."""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from comfyburst.api._openapi_environments import MODELS as ENVIRONMENT_MODELS
from comfyburst.api._openapi_environments import environment_paths
from comfyburst.api._openapi_usage import MODELS as USAGE_MODELS
from comfyburst.api._openapi_usage import query, usage_paths
from comfyburst.api.views import ErrorBody, Health, JobList, JobView, ValidateResponse
from comfyburst.domain.previews import PREVIEW_CONTENT_TYPES
from comfyburst.schema import GpuClassList, JobRequest
from comfyburst.services.job_list import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from comfyburst.services.job_wait import MAX_WAIT_S
from comfyburst.services.uploads import UploadAnswer, UploadRequestBody
from comfyburst.settings import AuthMode
from comfyburst.states import JobState

JOB_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(refs: dict[str, Any], *statuses: int) -> dict[str, Any]:
    texts = {
        400: "Malformed or invalid request (error.field names the offending field)",
        401: "Missing credentials",
        403: "Credentials not accepted",
        404: "No such job, or not the caller's (the same answer)",
        405: "Method not allowed on this path",
        409: "Conflict with the job's state or an earlier use of the Idempotency-Key, or the "
        "job stayed contended by concurrent updates (code `contended`: retry after Retry-After)",
        413: "Request, workflow or inputs too large",
        422: "The workflow fails pre-flight validation (ComfyUI-shaped node_errors)",
        500: "Internal error",
        503: "A dependency is unavailable; retry (after Retry-After seconds when given)",
    }
    return {str(s): _json(refs["ErrorBody"], texts[s]) for s in (*statuses, 401, 403, 500, 503)}


def _limit_errors(refs: dict[str, Any]) -> dict[str, Any]:
    """The refusals of the deployer's per-caller limits (domain/caller_limits.py)."""
    forbidden = (
        "Credentials not accepted; or code `gpu_class_forbidden`: the deployer's limits do not "
        "let this caller use the GPU class (error.details.gpu_class names it, .allowed the "
        "classes it may use); or code `budget_exceeded`: the caller's receipts this month reach "
        "its monthly budget (error.details: monthly_budget_usd, spent_usd, resets_at); nothing "
        "was written"
    )
    full = (
        "Code `queue_full`: the caller has as many jobs queued as the deployer allows "
        "(error.details.max_queued); nothing was written; retry after Retry-After seconds"
    )
    retry_after = {
        "description": "Seconds to wait before submitting again",
        "schema": {"type": "integer", "minimum": 0},
    }
    return {
        "403": _json(refs["ErrorBody"], forbidden),
        "429": {**_json(refs["ErrorBody"], full), "headers": {"Retry-After": retry_after}},
    }


_WAIT_S = {
    "name": "wait_s",
    "in": "query",
    "required": False,
    "description": "Wait up to this many seconds for a change of state or progress.",
    "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S},
}


def _list_parameters() -> list[dict[str, Any]]:
    time = {"type": "string", "format": "date-time"}
    return [
        {
            **query(
                "state",
                {"type": "array", "items": {"enum": [s.value for s in JobState]}},
                "Only jobs in these states (repeat the parameter for several).",
            ),
            "style": "form",
            "explode": True,
        },
        query("created_after", time, "Only jobs created at or after this time (RFC 3339)."),
        query("created_before", time, "Only jobs created before this time (RFC 3339)."),
        query(
            "page_size",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
            f"Jobs per page (default {DEFAULT_PAGE_SIZE}).",
        ),
        query(
            "page_token",
            {"type": "string", "minLength": 1, "maxLength": 512},
            "next_page_token of the previous page, with the same filters.",
        ),
    ]


@functools.cache
def openapi_document(auth_mode: AuthMode = AuthMode.IAM) -> dict[str, Any]:
    """The API description; cached per auth mode."""
    keys, schemas = models_json_schema(
        [
            (JobRequest, "validation"),
            (JobView, "serialization"),
            (JobList, "serialization"),
            (ValidateResponse, "serialization"),
            (ErrorBody, "serialization"),
            (Health, "serialization"),
            (UploadRequestBody, "validation"),
            (UploadAnswer, "serialization"),
            (GpuClassList, "serialization"),
            *ENVIRONMENT_MODELS,
            *USAGE_MODELS,
        ],
        ref_template=_REF,
    )
    refs = {model.__name__: schema for (model, _mode), schema in keys.items()}
    job_id = {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": JOB_ID_PATTERN},
    }
    idempotency = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "The same key with the same body answers the same job (200).",
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    }
    body = {"required": True, "content": {"application/json": {"schema": refs["JobRequest"]}}}
    job = refs["JobView"]
    paths: dict[str, Any] = {
        "/jobs": {
            "get": {
                "operationId": "listJobs",
                "summary": "The caller's jobs (an admin's: everyone's), newest first, paged",
                "parameters": _list_parameters(),
                "responses": {
                    "200": _json(refs["JobList"], "One page of jobs"),
                    **_errors(refs, 400),
                },
            },
            "post": {
                "operationId": "submitJob",
                "summary": "Submit a job; answers at once with the job (starting or queued)",
                "parameters": [idempotency],
                "requestBody": body,
                "responses": {
                    "202": _json(job, "Accepted"),
                    "200": _json(job, "Accepted earlier under this Idempotency-Key"),
                    **_errors(refs, 400, 409, 413, 422),
                    **_limit_errors(refs),
                },
            },
        },
        "/jobs:validate": {
            "post": {
                "operationId": "validateJob",
                "summary": "Check a job request and pre-flight its workflow; submits nothing",
                "requestBody": body,
                "responses": {
                    "200": _json(refs["ValidateResponse"], "The pre-flight verdict"),
                    **_errors(refs, 400, 413),
                },
            }
        },
        "/jobs/{job_id}": {
            "get": {
                "operationId": "getJob",
                "summary": "The job, with progress and fresh signed output URLs; with wait_s, "
                "answers when its state or progress changes (at once when terminal)",
                "parameters": [job_id, _WAIT_S],
                "responses": {"200": _json(job, "The job"), **_errors(refs, 400, 404)},
            }
        },
        "/jobs/{job_id}:cancel": {
            "post": {
                "operationId": "cancelJob",
                "summary": "Cancel: a queued job at once, a starting/running one asynchronously",
                "parameters": [job_id],
                "responses": {
                    "200": _json(job, "Cancelled"),
                    "202": _json(job, "Cancellation requested; the worker interrupts the run"),
                    **_errors(refs, 404, 409),
                },
            }
        },
        "/jobs/{job_id}/preview": {
            "get": {
                "operationId": "getJobPreview",
                "summary": "The latest live preview frame of a running job (about one a second "
                "while its sampler runs); 204 when there is none or the job is not running",
                "parameters": [job_id],
                "responses": {
                    "200": {
                        "description": "The frame",
                        "content": {
                            kind: {"schema": {"type": "string", "contentMediaType": kind}}
                            for kind in PREVIEW_CONTENT_TYPES
                        },
                    },
                    "204": {"description": "No preview now"},
                    **_errors(refs, 404),
                },
            }
        },
        "/uploads": {
            "post": {
                "operationId": "startUpload",
                "summary": "Bring a model file of your own: exists, or a resumable upload "
                "session for this sha256 and size (callers in model_upload_principals)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": refs["UploadRequestBody"]}},
                },
                "responses": {
                    "200": _json(refs["UploadAnswer"], "Where the file is, and where to send it"),
                    **_errors(refs, 400),
                },
            }
        },
        "/gpu-classes": {
            "get": {
                "operationId": "listGpuClasses",
                "summary": "The GPU classes a job may ask for (options.gpu_class): accelerator, "
                "Spot or standard, price per hour; the default and the preemption fallback",
                "responses": {
                    "200": _json(refs["GpuClassList"], "The deployment's classes"),
                    **_errors(refs),
                },
            }
        },
        **environment_paths(refs, _json, _errors),
        **usage_paths(refs, _json, _errors),
        "/healthz": {
            "get": {
                "operationId": "health",
                "security": [],
                "responses": {"200": _json(refs["Health"], "Serving")},
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "This document"}},
            }
        },
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "ComfyBurst API",
            "version": "1",
            # Described by its own document (api/_v2_openapi.py), not here.
            "description": "Also served: Comfy API v2 (2.0.0) under /api/v2 — jobs and assets "
            "for the comfy-sdk client, described at /api/v2/openapi.json.",
        },
        "paths": paths,
        "components": {"schemas": schemas.get("$defs", {})},
    }
    if auth_mode is AuthMode.API_KEY:
        document["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        }
        document["security"] = [{"apiKey": []}]
    else:
        document["components"]["securitySchemes"] = {
            "googleIdToken": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
        }
        document["security"] = [{"googleIdToken": []}]
    return document
