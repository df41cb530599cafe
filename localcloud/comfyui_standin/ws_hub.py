"""Websocket hub of the ComfyUI stand-in: `/ws?clientId=X`, per-client sends and broadcasts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .faults import Faults

log = logging.getLogger(__name__)

SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104_857_600}
_DROP_CLOSE_CODE = 1011


@dataclass
class _Client:
    sid: str
    ws: web.WebSocketResponse
    # A writer task per socket keeps each socket's message order whatever task sends.
    outbox: asyncio.Queue[str | bytes | None] = field(default_factory=asyncio.Queue)
    sent: int = 0
    # What the client announced in its `feature_flags` message.
    features: dict[str, Any] = field(default_factory=dict)


class WsHub:
    """Tracks connected sockets by client id and delivers messages in order."""

    def __init__(self, queue_remaining: Callable[[], int], faults: Callable[[], Faults]) -> None:
        self._queue_remaining = queue_remaining
        self._faults = faults
        self._clients: dict[str, _Client] = {}
        self._dropped: set[str] = set()

    def reset_drops(self) -> None:
        """Forget which clients were already dropped (a new fault set starts afresh)."""
        self._dropped.clear()

    def send(self, event: str, data: dict[str, Any], sid: str) -> None:
        """Queue a message for the socket of `sid`; nothing happens if it is not connected."""
        client = self._clients.get(sid)
        if client is not None:
            client.outbox.put_nowait(json.dumps({"type": event, "data": data}))

    def send_bytes(self, frame: bytes, sid: str | None) -> None:
        """Queue a binary frame for `sid`'s socket; for every socket when `sid` is None (the
        real server's send to no client id)."""
        targets = [self._clients.get(sid)] if sid is not None else list(self._clients.values())
        for client in targets:
            if client is not None:
                client.outbox.put_nowait(frame)

    def supports(self, sid: str | None, feature: str) -> bool:
        """Whether the client `sid` announced `feature` (never for no client id)."""
        client = self._clients.get(sid) if sid is not None else None
        return client is not None and client.features.get(feature) is True

    def broadcast(self, event: str, data: dict[str, Any]) -> None:
        """Queue a message for every connected socket."""
        text = json.dumps({"type": event, "data": data})
        for client in list(self._clients.values()):
            client.outbox.put_nowait(text)

    def status_data(self) -> dict[str, Any]:
        """The `status` payload: how many prompts are pending or running."""
        return {"status": {"exec_info": {"queue_remaining": self._queue_remaining()}}}

    async def close_all(self) -> None:
        """Close every socket (server shutdown)."""
        for client in list(self._clients.values()):
            await client.ws.close(code=1001, message=b"stand-in shutting down")

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """The `/ws` route."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        client = _Client(sid=sid, ws=ws)
        self._clients[sid] = client
        writer = asyncio.create_task(self._write(client))
        self.send("status", {**self.status_data(), "sid": sid}, sid)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(sid, msg.data)
        finally:
            if self._clients.get(sid) is client:
                del self._clients[sid]
            client.outbox.put_nowait(None)
            with contextlib.suppress(Exception):
                await writer
        return ws

    def _on_text(self, sid: str, text: str) -> None:
        with contextlib.suppress(ValueError):
            message = json.loads(text)
            if isinstance(message, dict) and message.get("type") == "feature_flags":
                flags = message.get("data")
                client = self._clients.get(sid)
                if client is not None and isinstance(flags, dict):
                    client.features = dict(flags)
                self.send("feature_flags", dict(SERVER_FEATURES), sid)

    async def _write(self, client: _Client) -> None:
        while (text := await client.outbox.get()) is not None:
            if client.ws.closed:
                return
            try:
                if isinstance(text, bytes):
                    await client.ws.send_bytes(text)
                else:
                    await client.ws.send_str(text)
            except ConnectionError:
                return
            client.sent += 1
            limit = self._faults().drop_ws_after_messages
            if limit is not None and client.sent >= limit and client.sid not in self._dropped:
                self._dropped.add(client.sid)
                log.info("fault: dropping websocket of %s after %d messages", client.sid, limit)
                await client.ws.close(code=_DROP_CLOSE_CODE, message=b"stand-in fault: dropped")
                return
