"""Routing: one Cloud Function serves every path; each route calls one use case."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

import flask
from pydantic import BaseModel

from comfyburst.api import _v2 as v2
from comfyburst.api import _v2_errors as v2_errors
from comfyburst.api._auth import admin_principals, authenticate
from comfyburst.api._deps import ApiDeps
from comfyburst.api._errors import (
    ANSWER_GROWTH,
    MAX_ANSWER_BYTES,
    MIN_ANSWER_BUDGET_BYTES,
    MethodNotAllowed,
    RouteNotFound,
    error_headers,
    error_response,
)
from comfyburst.api._list_wait import ServiceUnavailable, list_view, waited
from comfyburst.api.openapi import openapi_document
from comfyburst.api.views import (
    EnvironmentList,
    EnvironmentView,
    Health,
    JobView,
    ValidateResponse,
)
from comfyburst.domain import gpu_classes
from comfyburst.domain.environments import EnvironmentNotFound
from comfyburst.domain.json_safety import bounded_mapping
from comfyburst.domain.receipts import class_pricer
from comfyburst.domain.request_policy import RequestPolicy
from comfyburst.errors import PayloadTooLarge
from comfyburst.services import cancel, environments, preview, status, submit, uploads, usage
from comfyburst.services.job_wait import parse_wait_s
from comfyburst.settings import AuthMode

logger = logging.getLogger(__name__)

_JOB_PATH = re.compile(r"^/jobs/(?P<job_id>[A-Za-z0-9_-]{1,64})(?P<action>:cancel)?$")
_ANY_JOB_PATH = re.compile(r"^/jobs/[^/]+$")
_ENVIRONMENT_PATH = re.compile(r"^/environments/(?P<environment_id>env-[0-9a-f]{64})$")
_PREVIEW_PATH = re.compile(r"^/jobs/(?P<job_id>[A-Za-z0-9_-]{1,64})/preview$")
_BODY_READ = "comfyburst.body_read"


def handle(request: flask.Request, deps: Callable[[], ApiDeps]) -> flask.Response:
    """Answer one API request; `deps` builds (once) what the use cases need."""
    path = request.path.rstrip("/") or "/"
    v2_path = v2.subpath(path)
    try:
        if v2_path is not None:
            return v2.route(request, v2_path, deps, _read_body)
        return _route(request, path, deps)
    except Exception as exc:
        # Comfy API v2 answers in its own envelope; the headers and the body rule are shared.
        answer = v2_errors.error_answer if v2_path is not None else error_response
        status_code, body = answer(
            exc, budget_bytes=answer_budget_bytes(request), path=path, method=request.method
        )
        response = _json(status_code, body)
        for name, value in error_headers(exc).items():
            response.headers[name] = value
        if not request.environ.get(_BODY_READ) and _has_body(request):
            # functions-framework reads the whole body before answering unless the answer is
            # streamed: refuse without reading it, and close the connection.
            response.response = iter([response.get_data()])
            response.headers["Connection"] = "close"
        return response


def answer_budget_bytes(request: flask.Request) -> int:
    """The most an answer to this request may hold: a small multiple of the request, at
    least enough for a useful error, never over 1 MiB."""
    declared = request.content_length or 0
    return min(MAX_ANSWER_BYTES, max(MIN_ANSWER_BUDGET_BYTES, ANSWER_GROWTH * declared))


def _has_body(request: flask.Request) -> bool:
    return bool(request.content_length) or "chunked" in (
        request.headers.get("Transfer-Encoding") or ""
    )


def _route(request: flask.Request, path: str, deps: Callable[[], ApiDeps]) -> flask.Response:
    method = request.method
    if path == "/healthz":
        _allow(method, "GET")
        return _model(200, Health())
    if path == "/openapi.json":
        _allow(method, "GET")
        mode = AuthMode(deps().settings.auth_mode)
        return _json(200, openapi_document(mode))
    if path == "/jobs" and method in ("GET", "HEAD"):
        api = deps()
        caller = authenticate(request.headers, api.settings)
        _needs_views(api)
        return _model(200, list_view(api, request.args.to_dict(flat=False), caller))
    if path in ("/jobs", "/jobs:validate"):
        _allow(method, *(("GET", "POST") if path == "/jobs" else ("POST",)))
        api = deps()
        caller = authenticate(request.headers, api.settings)
        body = _read_body(request, api.settings)
        if path == "/jobs:validate":
            return _validate(api, body, answer_budget_bytes(request))
        result = submit.submit_job(
            api.submit_deps(),
            body,
            idempotency_key=request.headers.get("Idempotency-Key"),
            caller=caller,
        )
        response = _model(202 if result.created else 200, JobView.of(result.job))
        response.headers["Location"] = f"/jobs/{result.job.job_id}"
        return response
    if path == "/uploads":
        _allow(method, "POST")
        return _upload(request, deps())
    if path == "/gpu-classes":
        _allow(method, "GET")
        api = deps()
        authenticate(request.headers, api.settings)
        return _model(200, gpu_classes.for_settings(api.settings).listing())
    if path == "/usage":
        _allow(method, "GET")
        api = deps()
        caller = authenticate(request.headers, api.settings)
        _needs_views(api)
        answer = usage.get_usage(
            api.views,
            request.args.to_dict(flat=False),
            api.clock.now(),
            caller=caller,
            admins=admin_principals(api.settings),
            price_of=class_pricer(
                gpu_classes.for_settings(api.settings), api.settings.pool_price_per_hour
            ),
        )
        return flask.Response(
            answer.model_dump_json(by_alias=True), 200, mimetype="application/json"
        )
    if path == "/environments" or path.startswith("/environments/"):
        return _environments(request, path, deps())
    if (found := _PREVIEW_PATH.match(path)) is not None:
        _allow(method, "GET")
        return _preview(request, deps(), found["job_id"])
    match = _JOB_PATH.match(path)
    if match is None:
        if _ANY_JOB_PATH.match(path):
            raise RouteNotFound("job not found (malformed job id)")
        raise RouteNotFound(f"no route for {path}")
    job_id = match["job_id"]
    _allow(method, "POST" if match["action"] else "GET")
    api = deps()
    caller = authenticate(request.headers, api.settings)
    admins = admin_principals(api.settings)
    if match["action"]:
        outcome = cancel.cancel_job(
            api.store, api.publisher, api.clock, job_id, caller=caller, admins=admins
        )
        return _model(200 if outcome.cancelled else 202, JobView.of(outcome.job))
    wait_s = parse_wait_s(request.args.to_dict(flat=False))
    if wait_s is not None:
        _needs_views(api)
    job = status.get_job(api.store, api.signer, api.clock, job_id, caller=caller, admins=admins)
    return _model(200, JobView.of(waited(api, job, wait_s)))


def _upload(request: flask.Request, api: ApiDeps) -> flask.Response:
    caller = authenticate(request.headers, api.settings)
    if api.uploads is None or not api.settings.models_bucket:
        raise ServiceUnavailable("model uploads are not configured in this deployment")
    body = request.stream.read(uploads.MAX_UPLOAD_BODY_BYTES + 1)
    request.environ[_BODY_READ] = True
    answer = uploads.start_upload(
        api.uploads, api.settings, body, caller=caller, admins=admin_principals(api.settings)
    )
    return _model(200, answer)


def _preview(request: flask.Request, api: ApiDeps, job_id: str) -> flask.Response:
    caller = authenticate(request.headers, api.settings)
    image = preview.get_preview(
        api.store,
        api.blobs,
        api.settings.outputs_bucket,
        job_id,
        caller=caller,
        admins=admin_principals(api.settings),
    )
    if image is None:
        response = flask.Response(status=204)
    else:
        response = flask.Response(image.data, 200, content_type=image.content_type)
    # A new frame replaces this one within a second: no cache may keep it.
    response.headers["Cache-Control"] = "no-store"
    return response


def _environments(request: flask.Request, path: str, api: ApiDeps) -> flask.Response:
    """POST/GET /environments and GET /environments/{id}; off (403) without sources."""
    if path == "/environments":
        _allow(request.method, "GET", "POST")
    else:
        _allow(request.method, "GET")
    caller = authenticate(request.headers, api.settings)
    environments.EnvironmentPolicy(api.settings).check_enabled()
    if api.environments is None:
        raise ServiceUnavailable("environments are not configured in this deployment")
    if path == "/environments" and request.method == "POST":
        body = _read_body(request, api.settings, limit=environments.MAX_ENVIRONMENT_BODY_BYTES)
        env, created = environments.create_environment(
            api.environments, api.settings, api.clock, body, caller=caller, builds=api.submit_deps()
        )
        response = _model(201 if created else 200, EnvironmentView.of(env))
        response.headers["Location"] = f"/environments/{env.environment_id}"
        return response
    if path == "/environments":
        found = environments.list_environments(api.environments, caller=caller)
        return _model(200, EnvironmentList(environments=[EnvironmentView.of(e) for e in found]))
    match = _ENVIRONMENT_PATH.match(path)
    if match is None:  # a malformed id answers like an unknown one
        raise EnvironmentNotFound("environment not found")
    env = environments.get_environment(
        api.environments,
        match["environment_id"],
        caller=caller,
        admins=admin_principals(api.settings),
        jobs=api.store,
        clock=api.clock,
    )
    return _model(200, EnvironmentView.of(env))


def _needs_views(api: ApiDeps) -> None:
    if api.views is None:
        raise ServiceUnavailable("job lists and waits are not configured in this deployment")


def _validate(api: ApiDeps, body: bytes, budget_bytes: int) -> flask.Response:
    checked = submit.check_request(body, api.settings, api.catalogue())
    verdict = checked.verdict
    valid = submit.workflow_can_run(verdict)
    error = None if valid else verdict.body.get("error")
    # node_errors echo the caller's values and the catalogue's option lists: bounded.
    node_errors, omitted = bounded_mapping(verdict.node_errors, budget_bytes - 2048)
    return _model(
        200,
        ValidateResponse(
            valid=valid,
            error=error if isinstance(error, dict) else None,
            node_errors=node_errors,
            node_errors_omitted=omitted,
            outputs_to_execute=verdict.outputs_to_execute,
        ),
    )


def _read_body(request: flask.Request, settings: Any, *, limit: int | None = None) -> bytes:
    """The raw body, refusing (413) to read more than a valid request can be."""
    if limit is None:
        limit = RequestPolicy.from_settings(settings).max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    data: bytes = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    request.environ[_BODY_READ] = True
    return data


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed and not (method == "HEAD" and "GET" in allowed):
        raise MethodNotAllowed(f"{method} is not allowed here", details={"allow": list(allowed)})


def _model(status_code: int, model: BaseModel) -> flask.Response:
    return flask.Response(
        model.model_dump_json(exclude_none=False), status_code, mimetype="application/json"
    )


def _json(status_code: int, body: Any) -> flask.Response:
    # Compact UTF-8, as json_safety.json_size counts it (error bodies are bounded by it).
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return flask.Response(text, status_code, mimetype="application/json")
