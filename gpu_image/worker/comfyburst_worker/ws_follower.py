"""Follows one prompt over ComfyUI's websocket; a dropped socket is reopened and the run is
reconciled with `/history/{id}`, so no outcome is missed."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import websocket

from comfyburst.schema import Progress
from comfyburst_worker.comfy_client import ComfyClient
from comfyburst_worker.errors import ComfyUnavailable
from comfyburst_worker.previews import FEATURE_FLAGS
from comfyburst_worker.run_tracker import RunTracker

log = logging.getLogger(__name__)

_RECV_TIMEOUT_S = 0.5
# ComfyUI answers nothing for a few seconds after `POST /free` (measured 1.9 to 2.7 s on a CPU
# ComfyUI 0.3.64): the handshake gets this long, each receive afterwards _RECV_TIMEOUT_S.
_HANDSHAKE_TIMEOUT_S = 15.0
_HISTORY_POLL_S = 0.05
_HISTORY_WAIT_S = 10.0
_RECONNECTS = 20

Connect = Callable[[str], Any]


def _connect(url: str) -> Any:
    ws = websocket.create_connection(
        url, timeout=_HANDSHAKE_TIMEOUT_S, skip_utf8_validation=True, enable_multithread=False
    )
    ws.settimeout(_RECV_TIMEOUT_S)
    # Preview frames then carry their prompt id (previews.py), as ComfyUI's own frontend asks.
    ws.send(FEATURE_FLAGS)
    return ws


class WsFollower:
    """One websocket per agent (its client id), reused across jobs; messages are filtered by
    prompt id, so a late message of an earlier prompt is harmless."""

    def __init__(self, comfy: ComfyClient, client_id: str, connect: Connect = _connect) -> None:
        self.comfy, self.client_id = comfy, client_id
        self._connect = connect
        self._ws: Any = None

    def ensure_connected(self) -> None:
        """Open the socket before posting a prompt, so its first message is not missed."""
        if self._ws is None:
            self._ws = self._connect(self.comfy.ws_url(self.client_id))

    def close(self) -> None:
        if self._ws is not None:
            try:
                self._ws.close()
            finally:
                self._ws = None

    def follow(
        self,
        tracker: RunTracker,
        on_progress: Callable[[Progress], None],
        should_stop: Callable[[], bool],
        stop_wait_s: float = 30.0,
        on_binary: Callable[[bytes], None] | None = None,
    ) -> None:
        """Return once the run is over and its history written (`tracker.done`), or
        `stop_wait_s` after `should_stop()` turned true (the caller interrupted the run).
        Binary frames (previews) go to `on_binary`."""
        stop_deadline: float | None = None
        reconnects, last_check = 0, 0.0
        while not tracker.done:
            if stop_deadline is None and should_stop():
                stop_deadline = time.monotonic() + stop_wait_s
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                return
            try:
                self.ensure_connected()
                raw = self._ws.recv()
            except websocket.WebSocketTimeoutException:
                # After a drop the end may have come while no socket listened: ask history.
                if reconnects and time.monotonic() - last_check > 1.0:
                    last_check = time.monotonic()
                    self._reconcile(tracker)
                continue
            except (websocket.WebSocketException, OSError) as exc:
                reconnects += 1
                if reconnects > _RECONNECTS:
                    raise ComfyUnavailable(f"ComfyUI websocket keeps dropping: {exc}") from None
                log.warning("ComfyUI websocket dropped (%s); reconnecting", type(exc).__name__)
                self._ws = None
                last_check = time.monotonic()
                self._reconcile(tracker)
                continue
            if isinstance(raw, bytes | bytearray):
                if on_binary is not None:
                    on_binary(bytes(raw))
                continue
            if not isinstance(raw, str) or not raw:
                continue
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if isinstance(message, dict) and tracker.feed(message):
                on_progress(tracker.progress())

    def _reconcile(self, tracker: RunTracker) -> None:
        """Messages may have been lost while the socket was down; history settles a run."""
        try:
            entry = self.comfy.history(tracker.prompt_id)
        except Exception as exc:
            log.warning("history of %s unreadable: %s", tracker.prompt_id, exc)
            return
        if entry is not None:
            tracker.apply_history(entry)

    def history_after(self, tracker: RunTracker) -> dict[str, Any]:
        """The prompt's history entry; polled briefly if the socket outran its write."""
        deadline = time.monotonic() + _HISTORY_WAIT_S
        while True:
            entry = self.comfy.history(tracker.prompt_id)
            if entry is not None:
                return entry
            if time.monotonic() > deadline:
                raise ComfyUnavailable(f"no history for prompt {tracker.prompt_id}")
            time.sleep(_HISTORY_POLL_S)
