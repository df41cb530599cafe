"""Comfy API v2 (`/api/v2/...`): a thin face over the same services as our own API.

One job model, one tenancy rule, one pre-flight: a v2 submit becomes our job request
(api/_v2_submit.py) and goes through `submit.submit_job`; reads and cancels go through `status`,
`job_list` and `cancel`. `Authorization: Bearer <key>` is an API key in `api_key` mode (an ID
token in `iam` mode, as for our own routes).

`Idempotency-Key` is single-use here for 24 h, as the contract says: the key (scoped to the
caller, namespaced apart from our own API's keys, joined with its 24-hour window) derives the
job id, so the job document in Firestore is the durable claim (api/_v2_submit.py). The first
request with a key creates the job; any later one within 24 h, same body or not, answers 422
`idempotency_key_reuse`. A submit refused before its job is written (bad workflow, full queue,
pre-flight) leaves no claim, so a retry may use the key again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import flask

from comfyburst.api import _v2_assets as assets
from comfyburst.api._auth import admin_principals, authenticate
from comfyburst.api._deps import ApiDeps
from comfyburst.api._errors import MethodNotAllowed
from comfyburst.api._list_wait import ServiceUnavailable
from comfyburst.api._v2_errors import NotImplementedHere, V2Error
from comfyburst.api._v2_events import event_stream
from comfyburst.api._v2_openapi import openapi_document
from comfyburst.api._v2_submit import submit_v2
from comfyburst.api._v2_views import (
    PREFIX,
    asset_body,
    job_body,
    list_item,
    parse_asset_id,
)
from comfyburst.domain import tenancy
from comfyburst.domain.job_logs import LOG_CONTENT_TYPE, bound_log, job_log_object
from comfyburst.domain.labels import LabelError, check_filters
from comfyburst.errors import InvalidRequest, JobFinished, NotFound, PayloadTooLarge
from comfyburst.services import cancel, job_list, status, submit
from comfyburst.services.results import split_gs_uri
from comfyburst.settings import AuthMode

_JOB = re.compile(r"^/jobs/(?P<job_id>[^/]+)(?P<action>/cancel|/events|/logs|/workflow)?$")
_ASSET = re.compile(r"^/assets/(?P<asset_id>[^/]+)(?P<content>/content)?$")
_BY_HASH = re.compile(r"^/assets/by-hash/(?P<hash>[^/]+)$")
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ReadBody = Callable[[flask.Request, Any], bytes]


def subpath(path: str) -> str | None:
    """The part of `path` after /api/v2, or None when it is not a v2 path."""
    if path == PREFIX or path.startswith(PREFIX + "/"):
        return path[len(PREFIX) :] or "/"
    return None


def route(
    request: flask.Request, sub: str, deps: Callable[[], ApiDeps], read_body: ReadBody
) -> flask.Response:
    """Answer one v2 request (errors are raised; the caller turns them into the envelope)."""
    method = request.method
    if sub == "/openapi.json":
        _allow(method, "GET")
        return _json(200, openapi_document())
    if sub == "/jobs":
        _allow(method, "GET", "POST")
        api = deps()
        caller = _caller(request, api.settings)
        if method == "POST":
            return _submit(request, api, caller, read_body)
        return _json(200, _list(api, request.args.to_dict(flat=False), caller))
    if (found := _JOB.match(sub)) is not None:
        action = found["action"]
        _allow(method, "POST" if action == "/cancel" else "GET")
        api = deps()
        caller = _caller(request, api.settings)
        job_id = found["job_id"]
        if not _JOB_ID.match(job_id):
            raise status.job_not_found(job_id[:64])
        admins = admin_principals(api.settings)
        if action == "/cancel":
            return _json(200, job_body(_cancel(api, job_id, caller, admins)))
        job = status.get_job(api.store, api.signer, api.clock, job_id, caller=caller, admins=admins)
        if action == "/events":
            if api.views is None:
                raise NotImplementedHere("live event streams are not configured here; poll")
            return event_stream(api, job, caller)
        if action == "/logs":
            return _job_log(api, job_id)
        if action == "/workflow":
            return _json(200, {"workflow": _workflow_of(api, job_id), "format": "api"})
        return _json(200, job_body(job))
    if sub in ("/assets", "/assets/from-hash"):
        _allow(method, "POST")
        api = deps()
        caller = _caller(request, api.settings)
        if sub == "/assets":
            return assets.upload(request, api, caller)
        declared = request.content_length or 0
        if declared > assets.MAX_FROM_HASH_BODY_BYTES:
            raise PayloadTooLarge(
                f"the body is larger than {assets.MAX_FROM_HASH_BODY_BYTES} bytes"
            )
        return assets.from_hash(read_body(request, api.settings), api, caller)
    if (found := _BY_HASH.match(sub)) is not None:
        _allow_only(method, "HEAD")
        api = deps()
        return assets.by_hash(api, _caller(request, api.settings), found["hash"])
    if (found := _ASSET.match(sub)) is not None:
        content = bool(found["content"])
        _allow(method, *(("GET",) if content else ("GET", "DELETE")))
        api = deps()
        caller = _caller(request, api.settings)
        if method == "DELETE":
            return _delete_asset(api, found["asset_id"], caller)
        return _asset(api, found["asset_id"], caller, content=content)
    raise NotFound(f"no route for {PREFIX}{sub}"[:300])


def _caller(request: flask.Request, settings: Any) -> str | None:
    """The principal: in api_key mode the Bearer token is the key (else X-API-Key)."""
    if AuthMode(settings.auth_mode) is AuthMode.API_KEY:
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return authenticate({"X-API-Key": token.strip()}, settings)
    return authenticate(request.headers, settings)


def _submit(
    request: flask.Request, api: ApiDeps, caller: str | None, read_body: ReadBody
) -> flask.Response:
    job = submit_v2(
        api, read_body(request, api.settings), caller, request.headers.get("Idempotency-Key")
    )
    response = _json(201, job_body(job))
    response.headers["Location"] = f"{PREFIX}/jobs/{job.job_id}"
    return response


def _list(api: ApiDeps, args: dict[str, list[str]], caller: str | None) -> dict[str, Any]:
    """One page of the caller's jobs (an admin's: all), newest first."""
    if api.views is None:
        raise ServiceUnavailable("job lists are not configured in this deployment")
    ours: dict[str, list[str]] = {}
    filters: list[tuple[str, str]] = []
    for name, values in args.items():
        if name.startswith("metadata"):
            filters.extend(_label_filter(name, values))
            continue
        translated = {"limit": "page_size", "cursor": "page_token"}.get(name)
        if translated is None:
            raise V2Error(
                "invalid_request", 422, f"unknown query parameter {name[:100]!r}", field=name[:100]
            )
        ours[translated] = values
    key = api.page_token_key.get()
    admins = admin_principals(api.settings)
    try:
        labels = check_filters(filters)
    except LabelError as exc:
        raise V2Error("invalid_metadata_filter", 422, exc.message, field="metadata") from None
    try:
        query = job_list.parse_query(
            ours,
            caller,
            all_callers=tenancy.is_admin(caller, admins),
            token_key=key,
            labels=labels,
        )
    except InvalidRequest as exc:  # named as the caller named them
        ours_name = exc.field or ""
        theirs = {"page_size": "limit", "page_token": "cursor"}.get(ours_name, ours_name)
        message = exc.message.replace(ours_name, theirs) if ours_name else exc.message
        if theirs == "cursor":  # comfy-sdk's documented code for a cursor not made here
            raise V2Error("invalid_cursor", 400, message, field="cursor") from None
        raise InvalidRequest(message, field=theirs or None) from None
    page = job_list.list_jobs(api.views, query, key)
    body: dict[str, Any] = {"jobs": [list_item(job) for job in page.jobs]}
    if page.next_page_token is not None:
        body["next_cursor"] = page.next_page_token
    return body


def _label_filter(name: str, values: list[str]) -> list[tuple[str, str]]:
    """`metadata[<key>]=<value>` (the contract's deepObject style) as one (key, value)."""
    if not (name.startswith("metadata[") and name.endswith("]")) or len(values) != 1:
        raise V2Error(
            "invalid_metadata_filter", 422,
            "a label filter is metadata[<key>]=<value>, each key once", field=name[:100],
        )  # fmt: skip
    return [(name[len("metadata[") : -1], values[0])]


def _workflow_of(api: ApiDeps, job_id: str) -> dict[str, Any]:
    """The API-format graph the job ran, from its stored request (never its inputs' bytes)."""
    stored = api.blobs.read(api.settings.jobs_bucket, submit.jobs_prefix(job_id) + "request.json")
    if stored is None:
        raise status.job_not_found(job_id)
    workflow: dict[str, Any] = json.loads(stored)["workflow"]
    return workflow


def _job_log(api: ApiDeps, job_id: str) -> flask.Response:
    """What ComfyUI printed while the job ran, as the worker stored it; what is answered is
    bounded again here, whatever the object holds. 204 while there is none (before its run
    ends, or nothing was printed or stored)."""
    stored = api.blobs.read(api.settings.outputs_bucket, job_log_object(job_id))
    text = bound_log(stored.decode(errors="replace")) if stored else ""
    if not text.strip():
        return flask.Response(status=204)
    response = flask.Response(text, 200, content_type=LOG_CONTENT_TYPE)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _cancel(api: ApiDeps, job_id: str, caller: str | None, admins: frozenset[str]) -> Any:
    try:
        outcome = cancel.cancel_job(
            api.store, api.publisher, api.clock, job_id, caller=caller, admins=admins
        )
    except JobFinished:
        # v2: cancelling a finished job is a no-op answering its terminal state.
        return status.get_job(
            api.store, api.signer, api.clock, job_id, caller=caller, admins=admins
        )
    return outcome.job


def _asset(api: ApiDeps, value: str, caller: str | None, *, content: bool) -> flask.Response:
    """An asset (an upload or an output), or (content) a 302 to a fresh signed URL of it."""
    hex_digest = assets.hex_of_id(value)
    if hex_digest is not None:
        stored = assets.find(api, caller, hex_digest)
        if stored is None:
            raise NotFound("asset not found")
        data = assets.body(api, caller, stored, created_new=None)
        return _redirect(data["url"]) if content else _json(200, data)
    job, index = _visible_output(api, value, caller)
    output = job.outputs[index]
    assert output.gs_uri is not None
    ttl_s = job.options.signed_url_ttl_s
    url = api.signer.sign_get(*split_gs_uri(output.gs_uri), ttl_s)
    if content:
        return _redirect(url)
    expires = api.clock.now() + timedelta(seconds=ttl_s)
    return _json(200, asset_body(job, index, output, url, expires))


def _visible_output(api: ApiDeps, value: str, caller: str | None) -> tuple[Any, int]:
    """The job and index of an output asset the caller may see, else the one 404."""
    parsed = parse_asset_id(value)
    if parsed is None:
        raise NotFound("asset not found")
    job_id, index = parsed
    admins = admin_principals(api.settings)
    job = api.store.get_job(job_id)
    # One answer for a missing output and another caller's: the same 404, nothing signed.
    if job is None or not tenancy.can_see(caller, job, admins) or index >= len(job.outputs):
        raise NotFound("asset not found")
    if job.outputs[index].gs_uri is None:
        raise NotFound("asset not found")
    return job, index


def _delete_asset(api: ApiDeps, value: str, caller: str | None) -> flask.Response:
    hex_digest = assets.hex_of_id(value)
    if hex_digest is not None:
        return assets.delete(api, caller, hex_digest)
    _visible_output(api, value, caller)
    raise V2Error("asset_in_use", 409, "a job output goes with its job; it is not deleted alone")


def _redirect(url: str) -> flask.Response:
    response = flask.Response(status=302)
    response.headers["Location"] = url
    response.headers["Cache-Control"] = "no-store"
    return response


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed and not (method == "HEAD" and "GET" in allowed):
        raise MethodNotAllowed(f"{method} is not allowed here", details={"allow": list(allowed)})


def _allow_only(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise MethodNotAllowed(f"{method} is not allowed here", details={"allow": list(allowed)})


def _json(status_code: int, body: Any) -> flask.Response:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return flask.Response(text, status_code, mimetype="application/json")
