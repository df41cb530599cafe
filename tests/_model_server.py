"""A small threaded HTTP file server for worker tests and benchmarks: Range requests,
optional redirects, and a switch to hide `Accept-Ranges`. Binds 127.0.0.1 on a free port.

Hostile answers for the bounds tests: `encoded` paths are sent as stored with
`Content-Encoding: gzip`, `unsized` paths without a Content-Length (close-delimited), and
`stalled` paths send their first 64 KiB and then hang until `release` is set."""

from __future__ import annotations

import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class ModelServer:
    """`files`: URL path -> file on disk; `redirects`: URL path -> absolute Location."""

    def __init__(self, files: dict[str, Path], *, ranges: bool = True) -> None:
        self.files = dict(files)
        self.redirects: dict[str, str] = {}
        self.ranges = ranges
        self.encoded: set[str] = set()
        self.unsized: set[str] = set()
        self.stalled: set[str] = set()
        self.release = threading.Event()
        self.stall_ended = threading.Event()  # a stalled answer went on (released or timed out)
        self.requests: list[tuple[str, str | None, str | None]] = []  # path, Range, Authorization
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        return f"http://{self.hostport}{path}"

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, req: BaseHTTPRequestHandler) -> None:
        range_header = req.headers.get("Range")
        self.requests.append((req.path, range_header, req.headers.get("Authorization")))
        if req.path in self.redirects:
            req.send_response(302)
            req.send_header("Location", self.redirects[req.path])
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        path = self.files.get(req.path)
        if path is None:
            req.send_response(404)
            req.send_header("Content-Length", "0")
            req.end_headers()
            return
        size = path.stat().st_size
        if req.path in self.unsized:
            self._serve_unsized(req, path)
            return
        start, end, status = 0, size - 1, 200
        match = _RANGE.match(range_header or "") if self.ranges else None
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            if start >= size:
                req.send_response(416)
                req.send_header("Content-Range", f"bytes */{size}")
                req.send_header("Content-Length", "0")
                req.end_headers()
                return
            status = 206
        req.send_response(status)
        if self.ranges:
            req.send_header("Accept-Ranges", "bytes")
        if status == 206:
            req.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        req.send_header("Content-Length", str(end - start + 1))
        req.send_header("Content-Type", "application/octet-stream")
        if req.path in self.encoded:
            req.send_header("Content-Encoding", "gzip")
        req.end_headers()
        with open(path, "rb") as fh:
            offset, remaining = start, end - start + 1
            if req.path in self.stalled:
                fh.seek(offset)
                try:
                    req.wfile.write(fh.read(min(remaining, 64 * 1024)))
                    req.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return
                self.release.wait(timeout=20)
                self.stall_ended.set()
                return
            sock = req.connection.fileno()
            try:
                while remaining > 0:
                    sent = os.sendfile(sock, fh.fileno(), offset, min(remaining, 1 << 30))
                    if sent == 0:
                        break
                    offset += sent
                    remaining -= sent
            except (BrokenPipeError, ConnectionResetError):
                pass

    def _serve_unsized(self, req: BaseHTTPRequestHandler, path: Path) -> None:
        data = path.read_bytes()
        req.send_response(200)
        req.send_header("Content-Type", "application/octet-stream")
        req.send_header("Connection", "close")
        req.close_connection = True
        req.end_headers()
        try:
            for offset in range(0, len(data), 64 * 1024):
                req.wfile.write(data[offset : offset + 64 * 1024])
        except (BrokenPipeError, ConnectionResetError):
            pass
