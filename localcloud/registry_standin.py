"""A Comfy registry stand-in on loopback: the API shape the worker reads, and the archives.

`GET /nodes/{id}/versions/{version}` answers a `NodeVersion` (`id`, `node_id`, `version`,
`downloadUrl`, `status`, `deprecated`, `dependencies`) or 404 with `{"message": …}`, as the
registry's API documents it; `downloadUrl` points at `GET /archives/{id}/{version}.zip` here,
the pack as a zip of its folder's files (what the registry's clients unpack into
`custom_nodes/<id>`). Packs are added by the test (`add_folder`, or `add_archive` for bytes
made to be refused); `requests` lists the paths asked for.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


def zip_folder(folder: Path) -> bytes:
    """The files under `folder` as a zip, names relative to it (no top folder)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())
    return out.getvalue()


@dataclass
class RegistryStandin:
    """The stand-in's packs; `url` once started (`serve`)."""

    archives: dict[tuple[str, str], bytes] = field(default_factory=dict)
    # A version's downloadUrl when the test wants another one than this server's archive.
    download_urls: dict[tuple[str, str], str] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    url: str = ""

    def add_folder(self, node_id: str, version: str, folder: Path) -> None:
        self.archives[(node_id, version)] = zip_folder(folder)

    def add_archive(self, node_id: str, version: str, data: bytes) -> None:
        self.archives[(node_id, version)] = data

    def _version(self, node_id: str, version: str) -> dict[str, object] | None:
        if (node_id, version) not in self.archives:
            return None
        default = f"{self.url}/archives/{node_id}/{version}.zip"
        return {
            "id": f"{node_id}-{version}",
            "node_id": node_id,
            "version": version,
            "downloadUrl": self.download_urls.get((node_id, version), default),
            "status": "NodeVersionStatusActive",
            "deprecated": False,
            "dependencies": [],
        }


def _handler(registry: RegistryStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            registry.requests.append(path)
            parts = [unquote(p) for p in path.strip("/").split("/")]
            if len(parts) == 4 and parts[0] == "nodes" and parts[2] == "versions":
                found = registry._version(parts[1], parts[3])
                if found is None:
                    self._send(404, json.dumps({"message": "Node version not found"}).encode())
                else:
                    self._send(200, json.dumps(found).encode())
                return
            if len(parts) == 3 and parts[0] == "archives" and parts[2].endswith(".zip"):
                data = registry.archives.get((parts[1], parts[2].removesuffix(".zip")))
                if data is not None:
                    self._send(200, data, "application/zip")
                    return
            self._send(404, json.dumps({"message": "not found"}).encode())

        def _send(self, status: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def serve(registry: RegistryStandin) -> Iterator[RegistryStandin]:
    """Serve `registry` on 127.0.0.1 (an ephemeral port) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry))
    registry.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
