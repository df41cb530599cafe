"""The worker's websocket handshake waits out a ComfyUI that is slow to answer (as a real one
is for a few seconds after `POST /free`), and then receives with its short timeout."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time

from comfyburst_worker import ws_follower

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3
HANDSHAKE_DELAY_S = 1.5  # longer than the receive timeout, shorter than the handshake's


def _slow_ws_server(received: list[bytes]) -> tuple[int, threading.Thread]:
    """A one-connection websocket server that answers the upgrade HANDSHAKE_DELAY_S late."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            digest = hashlib.sha1(key + _WS_GUID.encode(), usedforsecurity=False).digest()
            accept = base64.b64encode(digest)
            time.sleep(HANDSHAKE_DELAY_S)
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            conn.settimeout(10)
            received.append(conn.recv(4096))  # the feature-flags frame the worker sends

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_a_late_handshake_connects_and_receives_keep_the_short_timeout() -> None:
    received: list[bytes] = []
    port, thread = _slow_ws_server(received)
    ws = ws_follower._connect(f"ws://127.0.0.1:{port}/ws?clientId=w")
    try:
        assert ws.connected
        assert ws.gettimeout() == ws_follower._RECV_TIMEOUT_S
        thread.join(timeout=10)
        # A masked client text frame (0x81) carrying the feature flags was sent after it.
        assert received and received[0][:1] == b"\x81"
    finally:
        ws.close()
