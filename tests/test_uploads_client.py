"""The client's resumable upload after a failed chunk, against a loopback session that answers
as Cloud Storage documents it (308 with `Range: bytes=0-N`, no Range when it holds nothing,
200 once complete). fake-gcs-server's status query finalizes the session
(fsouza/fake-gcs-server#2354), so the resume path is checked here, not on the emulator."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from comfyburst.client import RESUMABLE_CHUNK_MULTIPLE, ApiClient, ApiError, ClientSettings

CHUNK = RESUMABLE_CHUNK_MULTIPLE


class Session:
    def __init__(self, fail_offsets: set[int], status: int = 503) -> None:
        self.held = bytearray()
        self.fail_offsets, self.fail_status = fail_offsets, status
        self.status_queries = 0
        self.done = False


def _handler(session: Session) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            return None

        def _answer(self, status: int) -> None:
            self.send_response(status)
            if status == 308 and session.held:
                self.send_header("Range", f"bytes=0-{len(session.held) - 1}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_PUT(self) -> None:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            span = self.headers["Content-Range"]
            query = re.fullmatch(r"bytes \*/(\d+)", span)
            if query:
                session.status_queries += 1
                return self._answer(200 if session.done else 308)
            match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", span)
            assert match, span
            first, total = int(match[1]), int(match[3])
            if first in session.fail_offsets:
                session.fail_offsets.discard(first)
                return self._answer(session.fail_status)  # this chunk is lost
            assert first == len(session.held), "a chunk must start where the session stands"
            session.held += data
            session.done = len(session.held) == total
            return self._answer(200 if session.done else 308)

    return Handler


@pytest.fixture
def served() -> Iterator[tuple[Session, str]]:
    session = Session(fail_offsets={CHUNK})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(session))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield session, f"http://127.0.0.1:{server.server_port}/upload?upload_id=x"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _client() -> ApiClient:
    return ApiClient(ClientSettings(api_url="http://127.0.0.1:9", auth="none"))


def test_a_lost_chunk_is_resent_from_where_the_session_stands(
    served: tuple[Session, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, url = served
    monkeypatch.setattr("comfyburst.client.time.sleep", lambda _s: None)
    data = bytes(range(256)) * (3 * CHUNK // 256) + b"end"
    path = tmp_path / "m.bin"
    path.write_bytes(data)
    progress: list[int] = []
    _client().send_file(url, str(path), len(data), on_progress=progress.append, chunk_bytes=CHUNK)
    assert bytes(session.held) == data and session.done
    assert session.status_queries == 1
    assert progress == sorted(progress) and progress[-1] == len(data)


def test_a_refused_chunk_is_an_error_not_a_retry(
    served: tuple[Session, str], tmp_path: Path
) -> None:
    session, url = served
    session.fail_offsets, session.fail_status = {0}, 412
    path = tmp_path / "m.bin"
    path.write_bytes(b"x" * 10)
    with pytest.raises(ApiError) as refused:
        _client().send_file(url, str(path), 10, chunk_bytes=CHUNK)
    assert refused.value.status == 412 and session.status_queries == 0


def test_chunks_must_be_multiples_of_256_kib(tmp_path: Path) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"x")
    with pytest.raises(ValueError, match="multiple"):
        _client().send_file("http://127.0.0.1:9/", str(path), 1, chunk_bytes=1000)
