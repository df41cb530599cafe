"""The chaos run's second tenant: caller B attacks caller A's jobs while A's jobs run.

A (the run's main caller) brings a model of its own on some jobs. B, with its own API key,
submits hostile jobs (annotated and traversing file values, a model of A's name with other
bytes, a marker-shaped model name, a gzip-encoded and an oversized download) and reads and
cancels A's jobs by id. What is measured, for real:

- `cross_tenant_reads`: B's GETs/cancels of A's job ids that answered 2xx, plus B's jobs that
  load a file they do not own (annotated/traversing values) and ended with outputs;
- `models_changed`: on every VM disk, stored model files whose bytes do not hash to their
  name, plus A's model file when its bytes differ from what A's server sends.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

MiB = 1024 * 1024
A_MODEL = "chaos-a.safetensors"


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    encoded: set[str] = set()

    def do_GET(self) -> None:
        body = self.files.get(self.path.split("?", 1)[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        if self.path in self.encoded:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # A bounded download hangs up early (the oversize attack): expected.
        with contextlib.suppress(ConnectionError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Tenants:
    """Two API keys, the model server both use, and what B's attacks got."""

    keys: dict[str, str] = field(
        default_factory=lambda: {w: f"chaos-{w}-{secrets.token_hex(8)}" for w in ("a", "b")}
    )
    hostport: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    reads_tried: int = 0
    cross_tenant_reads: int = 0
    hostile: dict[str, str] = field(default_factory=dict)  # kind -> outcome

    def settings_env(self) -> dict[str, str]:
        hashes = ",".join(
            f"{who}={hashlib.sha256(key.encode()).hexdigest()}" for who, key in self.keys.items()
        )
        return {
            "COMFYBURST_AUTH_MODE": "api_key",
            "COMFYBURST_API_KEY_HASHES": hashes,
            "COMFYBURST_HTTP_MODEL_HOSTS": self.hostport,
        }

    def url(self, path: str) -> str:
        return f"http://{self.hostport}{path}"

    def a_model(self) -> dict[str, Any]:
        data = self.files["/a"]
        return {
            "kind": "checkpoints",
            "filename": A_MODEL,
            "url": self.url("/a"),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_bytes": len(data),
        }


@contextmanager
def model_server() -> Iterator[Tenants]:
    """A loopback model server with A's model, B's lookalike, a gzip bomb and a large file."""
    tenants = Tenants()
    # A fresh subclass per server, so its class-level files are this run's only.
    handler = cast(type[_Handler], type("Handler", (_Handler,), {}))
    handler.files = {
        "/a": os.urandom(256 * 1024),
        "/b": os.urandom(256 * 1024),
        "/gz": gzip.compress(bytes(16 * MiB), compresslevel=9),
        "/big": os.urandom(2 * MiB),
    }
    handler.encoded = {"/gz"}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    tenants.hostport = f"127.0.0.1:{server.server_port}"
    tenants.files = handler.files
    try:
        yield tenants
    finally:
        server.shutdown()
        server.server_close()


def _load(image: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "b"}},
    }


def _model(tenants: Tenants, path: str, filename: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "checkpoints", "filename": filename, "url": tenants.url(path), **extra}


def hostile_requests(
    tenants: Tenants, a_job: str, plain: dict[str, Any], timeout_s: int
) -> dict[str, Any]:
    """B's jobs, by kind; `plain` is a harmless workflow the model attacks ride on.

    `timeout_s` is the run's own job deadline: a deadline covers queueing, and B's first job
    queues behind all of A's (FIFO), so a shorter one times out before any VM claims it (what
    `colliding_model_name` did at 240 s) and the attack it carries is never tried."""
    reads = {
        "annotated_output": _load("c_00001_.png [output]"),
        "annotated_temp": _load("c_00001_.png [temp]"),
        "traversing_input": _load(f"../input/comfyburst/{a_job}/photo.png"),
        "other_jobs_input": _load(f"comfyburst/{a_job}/photo.png"),
    }
    models = {
        "colliding_model_name": [_model(tenants, "/b", A_MODEL)],
        "marker_model_name": [_model(tenants, "/b", f"{A_MODEL}.part.src")],
        "gzip_download": [
            _model(tenants, "/gz", "gz.safetensors", size_bytes=len(tenants.files["/gz"]))
        ],
        "oversize_download": [_model(tenants, "/big", "big.safetensors", size_bytes=MiB)],
    }
    options = {"timeout_s": timeout_s}
    out: dict[str, Any] = {k: {"workflow": w, "options": options} for k, w in reads.items()}
    out.update({k: {"workflow": plain, "models": m, "options": options} for k, m in models.items()})
    return out


READ_KINDS = ("annotated_output", "annotated_temp", "traversing_input", "other_jobs_input")


def hung(outcomes: dict[str, str]) -> list[str]:
    """B's jobs that neither ran nor failed with a reason: ended `timed_out`, or the wait for
    them never ended (`error ...`). Each held B's work until its deadline and told B nothing."""
    return sorted(k for k, v in outcomes.items() if v == "timed_out" or v.startswith("error"))


def run_hostile(
    tenants: Tenants, client_b: Any, a_job: str, plain: dict[str, Any], timeout_s: int
) -> None:
    """Submit B's jobs and wait for each; a job that read a file it does not own counts."""
    from comfyburst.client import ApiError

    for kind, request in hostile_requests(tenants, a_job, plain, timeout_s).items():
        try:
            job = client_b.submit(request)
            done = client_b.wait(job["job_id"], poll_s=0.5, timeout_s=timeout_s + 60)
        except ApiError as exc:
            tenants.hostile[kind] = f"refused {exc.status}"
            continue
        except Exception as exc:  # a wait that never ended is a finding, not a crash
            tenants.hostile[kind] = f"error {type(exc).__name__}"
            continue
        tenants.hostile[kind] = done.get("state", "?")
        if kind in READ_KINDS and done.get("outputs"):
            tenants.cross_tenant_reads += 1


def read_others(tenants: Tenants, client_b: Any, a_jobs: list[str]) -> None:
    """B reads and cancels each of A's jobs by id; every 2xx is a cross-tenant read."""
    from comfyburst.client import ApiError

    for job_id in a_jobs:
        for call in (client_b.get, client_b.cancel):
            tenants.reads_tried += 1
            try:
                call(job_id)
            except ApiError:
                continue
            tenants.cross_tenant_reads += 1


def models_changed(tenants: Tenants, disks: Path) -> tuple[int, int]:
    """(changed, checked): stored model files whose bytes are not what their name says (every
    VM), plus A's model file where its bytes differ from A's source; and how many were read."""
    a_sha = hashlib.sha256(tenants.files["/a"]).hexdigest()
    changed = checked = 0
    for store in disks.glob("*/model-store/sha256"):
        for blob in store.iterdir():
            if not blob.is_file():
                continue
            data = blob.read_bytes()
            checked += 1
            if hashlib.sha256(data).hexdigest() != blob.name or (
                blob.name == a_sha and data != tenants.files["/a"]
            ):
                changed += 1
    return changed, checked
