"""Your local models on the GPU: a model file the workflow names that the GPU side lacks (not
in the image's catalogue, not brought by URL) but this ComfyUI has is uploaded once, addressed
by its sha256, and the job names it (`models` entry with the upload's gs:// URL, sha256, size).

Which files: the pre-flight's `value_not_in_list` errors (the catalogue lists model files per
loader input) whose value is a file in one of this ComfyUI's model folders. Hashes are
computed once per file version: cached by path, size and mtime in the user folder.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._vendor.comfyburst_core.client import ApiClient

HASH_CACHE_FILE_NAME = "comfyburst_model_hashes.json"
_HASH_CHUNK_BYTES = 8 * 1024 * 1024

# (value, loader input name) -> (kind, path) of the local file, or None.
FindLocal = Callable[[str, str], tuple[str, Path] | None]


@dataclass(frozen=True)
class LocalModel:
    kind: str
    filename: str
    path: Path


@dataclass(frozen=True)
class FileDigests:
    sha256: str
    md5_b64: str
    size_bytes: int


class HashCache:
    """sha256 (the address) and MD5 (what Cloud Storage keeps) of local files, kept in a JSON
    file; an entry holds while the file's size and mtime do."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def _load(self) -> dict[str, Any]:
        if self._path is None or not self._path.exists():
            return {}
        try:
            loaded = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}  # a damaged cache only costs a rehash
        return loaded if isinstance(loaded, dict) else {}

    def digests(self, path: Path) -> FileDigests:
        """The file's digests; read only when this version of it is not cached."""
        stat = path.stat()
        key = str(path.resolve())
        with self._lock:
            entry = self._load().get(key)
        if (
            isinstance(entry, dict)
            and entry.get("size_bytes") == stat.st_size
            and entry.get("mtime_ns") == stat.st_mtime_ns
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("md5_b64"), str)
        ):
            return FileDigests(entry["sha256"], entry["md5_b64"], stat.st_size)
        sha256, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as fh:
            while chunk := fh.read(_HASH_CHUNK_BYTES):
                sha256.update(chunk)
                md5.update(chunk)
        value = FileDigests(
            sha256.hexdigest(), base64.b64encode(md5.digest()).decode(), stat.st_size
        )
        if self._path is not None:
            with self._lock:
                entries = self._load()
                entries[key] = {
                    "size_bytes": stat.st_size,
                    "mtime_ns": stat.st_mtime_ns,
                    "sha256": value.sha256,
                    "md5_b64": value.md5_b64,
                }
                tmp = self._path.with_suffix(".tmp")
                tmp.write_text(json.dumps(entries), encoding="utf-8")
                os.replace(tmp, self._path)
        return value


def missing_on_gpu(verdict: dict[str, Any]) -> list[tuple[str, str]]:
    """(value, input name) of every loader value the GPU side's catalogue does not list."""
    found: list[tuple[str, str]] = []
    for entry in (verdict.get("node_errors") or {}).values():
        for error in entry.get("errors") or []:
            info = error.get("extra_info") or {}
            value = info.get("received_value")
            if error.get("type") == "value_not_in_list" and isinstance(value, str):
                pair = (value, str(info.get("input_name") or ""))
                if pair not in found:
                    found.append(pair)
    return found


def local_models_to_bring(
    request: dict[str, Any], verdict: dict[str, Any], find_local: FindLocal
) -> list[LocalModel]:
    """The local files the job needs and neither the GPU nor the job's models have."""
    brought = {str(m.get("filename")) for m in request.get("models") or []}
    wanted = []
    for value, input_name in missing_on_gpu(verdict):
        if value in brought:
            continue
        local = find_local(value, input_name)
        if local is not None:
            wanted.append(LocalModel(local[0], value, local[1]))
    return wanted


def bring_local_models(
    client: ApiClient,
    request: dict[str, Any],
    *,
    find_local: FindLocal,
    hashes: HashCache,
    on_progress: Callable[[int, int], None] = lambda sent, total: None,
) -> tuple[dict[str, Any], list[str]]:
    """The request with a models entry for each local file the GPU lacks (uploaded when the
    models bucket does not hold it yet), and the names of the files sent."""
    wanted = local_models_to_bring(request, client.validate(request), find_local)
    if not wanted:
        return request, []
    models = list(request.get("models") or [])
    sent: list[str] = []
    for model in wanted:
        digests = hashes.digests(model.path)
        sha256, size = digests.sha256, digests.size_bytes
        answer = client.start_upload(sha256, size, digests.md5_b64)
        if not answer.get("exists"):
            client.send_file(
                answer["session_url"],
                str(model.path),
                size,
                on_progress=functools.partial(_report, on_progress, size),
            )
            sent.append(model.filename)
        models.append(
            {
                "kind": model.kind,
                "filename": model.filename,
                "url": answer["url"],
                "sha256": sha256,
                "size_bytes": size,
            }
        )
    return {**request, "models": models}, sent


def _report(on_progress: Callable[[int, int], None], total: int, done: int) -> None:
    on_progress(done, total)


def without_bringable(verdict: dict[str, Any], find_local: FindLocal) -> dict[str, Any]:
    """The pre-flight verdict as it stands once this ComfyUI's model files are brought: their
    `value_not_in_list` errors dropped, and valid when nothing else was wrong (the run node
    uploads them and the API checks the job again)."""
    before = verdict.get("node_errors") or {}
    node_errors: dict[str, Any] = {}
    for node_id, entry in before.items():
        errors = [e for e in entry.get("errors") or [] if not _bringable(e, find_local)]
        if errors:
            node_errors[node_id] = {**entry, "errors": errors}
    if node_errors == before:
        return verdict
    result = {**verdict, "node_errors": node_errors}
    kind = (verdict.get("error") or {}).get("type", "prompt_outputs_failed_validation")
    if not verdict.get("valid") and not node_errors and kind == "prompt_outputs_failed_validation":
        result.update(valid=True, error=None)
    return result


def _bringable(error: dict[str, Any], find_local: FindLocal) -> bool:
    info = error.get("extra_info") or {}
    value = info.get("received_value")
    return (
        error.get("type") == "value_not_in_list"
        and isinstance(value, str)
        and find_local(value, str(info.get("input_name") or "")) is not None
    )
