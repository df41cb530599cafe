"""`core/ASSET` references in a v2 workflow, staged as the job's own input files.

comfy-sdk puts `{"__type": "core/ASSET", "info": {"id": …}}` where a file name goes (a
LoadImage's `image`). Each is resolved to one of the caller's assets (an upload, or an output
of one of its jobs), its bytes become an input of our job request (`inputs`, staged in the
job's folder and on the VM like any input) and the reference becomes that input's file
name, so pre-flight, limits and staging are the ones every job goes through. `info.id`
decides; `hash` and `file_path` are hints and are not read. A malformed reference, an
unknown id and another caller's asset are one answer, 422 `missing_asset`, before anything
is written.
"""

from __future__ import annotations

import base64
import posixpath
from typing import Any

from comfyburst.api import _v2_assets as assets
from comfyburst.api._auth import admin_principals
from comfyburst.api._v2_errors import V2Error
from comfyburst.api._v2_views import parse_asset_id
from comfyburst.domain import tenancy
from comfyburst.errors import PayloadTooLarge
from comfyburst.services.results import split_gs_uri

ASSET_TYPE = "core/ASSET"
# Deeper than any graph comfy-sdk builds; bounds the walk over a hostile one.
_MAX_DEPTH = 32


class MissingAsset(V2Error):
    def __init__(self, message: str, path: str) -> None:
        super().__init__("missing_asset", 422, message, field=path[:200])


def stage(api: Any, caller: str | None, workflow: dict[str, Any]) -> tuple[dict[str, Any], list]:
    """The workflow with each reference replaced by a file name, and the inputs to send."""
    found: dict[str, tuple[str, int, Any]] = {}  # asset id -> (file name, size, reader)
    budget = [int(api.settings.max_input_bytes)]

    def resolve(value: Any, path: str) -> str:
        asset_id = _reference_id(value, path)
        if asset_id not in found:
            name, size, read = _locate(api, caller, asset_id, path)
            budget[0] -= size
            if budget[0] < 0:
                raise PayloadTooLarge(
                    f"the referenced assets exceed {api.settings.max_input_bytes} bytes in all"
                )
            found[asset_id] = (name, size, read)
        return found[asset_id][0]

    staged = _replace(workflow, resolve, "workflow", 0)
    inputs = [
        {"name": name, "data_b64": base64.b64encode(read()).decode("ascii")}
        for name, _size, read in found.values()
    ]
    return staged, inputs


def _replace(value: Any, resolve: Any, path: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return value  # left as it is; the request's own checks refuse such a graph
    if isinstance(value, dict):
        if "__type" in value:
            return resolve(value, path)
        return {k: _replace(v, resolve, f"{path}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, resolve, f"{path}.{i}", depth + 1) for i, v in enumerate(value)]
    return value


def _reference_id(value: dict[str, Any], path: str) -> str:
    info = value.get("info")
    if value.get("__type") != ASSET_TYPE or set(value) != {"__type", "info"}:
        raise MissingAsset(f"{path}: not a {ASSET_TYPE} reference", path)
    if not isinstance(info, dict) or not isinstance(info.get("id"), str):
        raise MissingAsset(f"{path}: a {ASSET_TYPE} reference needs info.id", path)
    asset_id: str = info["id"]
    return asset_id


def _locate(api: Any, caller: str | None, asset_id: str, path: str) -> tuple[str, int, Any]:
    """(staged file name, size, a reader of the bytes) of the caller's asset, else 422."""
    hex_digest = assets.hex_of_id(asset_id)
    if hex_digest is not None:
        stored = assets.find(api, caller, hex_digest)
        if stored is not None:
            name = f"{hex_digest[:16]}-{stored.file_path}"[:200]
            return name, stored.size_bytes, lambda: assets.read_bytes(api, caller, stored)
    parsed = parse_asset_id(asset_id)
    if parsed is not None:
        job_id, index = parsed
        job = api.store.get_job(job_id)
        admins = admin_principals(api.settings)
        if job is not None and tenancy.can_see(caller, job, admins) and index < len(job.outputs):
            output = job.outputs[index]
            if output.gs_uri is not None:
                name = f"{job_id[:24]}-{index}-{posixpath.basename(output.name)}"[:200]
                return name, output.size_bytes, lambda: _read_output(api, output.gs_uri, path)
    raise MissingAsset(f"{path}: no asset {asset_id[:100]!r} of this caller", path)


def _read_output(api: Any, gs_uri: str, path: str) -> bytes:
    data = api.blobs.read(*split_gs_uri(gs_uri))
    if data is None:  # the outputs bucket's retention removed it
        raise MissingAsset(f"{path}: the output's bytes are no longer kept", path)
    return bytes(data)
