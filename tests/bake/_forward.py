"""A TCP forwarder: the metadata server's well-known address, inside the rehearsal's own network
namespace (on its loopback device), leads to a local metadata server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import socketserver
import threading

METADATA_IP = "169.254.169.254"


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class Forwarder:
    """Listens on (METADATA_IP, 80) and relays each connection to `target` ("host:port")."""

    def __init__(self, target: str, listen: tuple[str, int] = (METADATA_IP, 80)) -> None:
        host, _, port = target.rpartition(":")
        upstream = (host, int(port))

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with socket.create_connection(upstream, timeout=30) as out:
                    back = threading.Thread(target=_pipe, args=(out, self.request), daemon=True)
                    back.start()
                    _pipe(self.request, out)
                    back.join(timeout=600)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(listen, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
