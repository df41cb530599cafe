"""A stdlib HTTP server run in a background thread, shared by the API and metadata servers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# serve_forever checks for shutdown this often; the default 0.5 s would make every VM stop slow.
_POLL_S = 0.05


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class ServerThread:
    """Owns one listening server on host:port (0 = ephemeral) and its serving thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], host: str, port: int) -> None:
        self.server = _Server((host, port), handler)
        bound_host, self.port = self.server.server_address[:2]
        self.host = bound_host if isinstance(bound_host, str) else bound_host.decode()
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": _POLL_S},
            name=f"http-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def address(self) -> str:
        """`host:port` as the clients should dial it."""
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        """Stop accepting and close the socket; in-flight handlers finish on their own."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5.0)


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.0 (one request per connection, so stopping a server leaves nothing open)."""

    server_version = "localcloud"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging; tests and the CLI log what matters themselves."""

    def send_body(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send a complete response."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        """Send a JSON response."""
        body = json.dumps(payload).encode()
        self.send_body(status, body, "application/json; charset=UTF-8", headers)

    def read_json(self) -> Any:
        """The request body as JSON (None when empty)."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw.strip() else None
