"""ComfyUI's HTTP API, as the transcripts in tests/test_data/comfyui_api/ show it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from comfyburst_worker.errors import ComfyUnavailable, OutputError

_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PromptAnswer:
    status: int
    body: dict[str, Any]


class ComfyClient:
    """One ComfyUI server; a requests session kept alive across jobs."""

    def __init__(self, base_url: str, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.session.trust_env = False

    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path + "/ws", f"clientId={client_id}", ""))

    def wait_ready(
        self,
        timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Poll `GET /system_stats` until 200 (ComfyUI's logs are no readiness signal)."""
        deadline = clock() + timeout_s
        delay = 0.05
        while True:
            try:
                if self.session.get(f"{self.base_url}/system_stats", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            if clock() >= deadline:
                raise ComfyUnavailable(f"ComfyUI at {self.base_url} not ready in {timeout_s:.0f} s")
            sleep(delay)
            delay = min(delay * 2, 1.0)

    def post_prompt(self, prompt: dict[str, Any], client_id: str, prompt_id: str) -> PromptAnswer:
        body: dict[str, Any] = {"prompt": prompt, "client_id": client_id, "prompt_id": prompt_id}
        resp = self.session.post(f"{self.base_url}/prompt", json=body, timeout=_TIMEOUT_S)
        try:
            data = resp.json()
        except ValueError:
            data = {"error": {"type": "http", "message": resp.text[:500]}}
        return PromptAnswer(resp.status_code, data if isinstance(data, dict) else {})

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a prompt; None until ComfyUI wrote it."""
        resp = self.session.get(f"{self.base_url}/history/{prompt_id}", timeout=_TIMEOUT_S)
        resp.raise_for_status()
        entry = resp.json().get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def view(self, filename: str, subfolder: str, folder_type: str) -> tuple[bytes, str | None]:
        """An output file's bytes and content type."""
        resp = self.session.get(
            f"{self.base_url}/view",
            params={"filename": filename, "subfolder": subfolder, "type": folder_type},
            timeout=_TIMEOUT_S,
        )
        if resp.status_code != 200:
            raise OutputError(f"ComfyUI /view of {subfolder}/{filename}: HTTP {resp.status_code}")
        return resp.content, resp.headers.get("Content-Type")

    def free(self) -> None:
        """Have ComfyUI drop loaded models and cached node outputs before its next prompt
        (`POST /free`; its prompt worker acts on the flag when it next wakes, idle or not)."""
        resp = self.session.post(
            f"{self.base_url}/free",
            json={"unload_models": True, "free_memory": True},
            timeout=_TIMEOUT_S,
        )
        if resp.status_code != 200:
            raise ComfyUnavailable(f"ComfyUI answered /free with HTTP {resp.status_code}")

    def wait_idle(self, timeout_s: float) -> None:
        """Wait until `GET /queue` shows nothing running or pending (a stopped run has ended,
        so it writes no more files); ComfyUnavailable after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not self._idle():
            if time.monotonic() >= deadline:
                raise ComfyUnavailable(f"ComfyUI still busy after {timeout_s:.0f} s")
            time.sleep(0.05)

    def _idle(self) -> bool:
        try:
            resp = self.session.get(f"{self.base_url}/queue", timeout=5)
            body = resp.json() if resp.status_code == 200 else None
        except (requests.RequestException, ValueError):
            return False
        running = isinstance(body, dict) and (
            body.get("queue_running") or body.get("queue_pending")
        )
        return isinstance(body, dict) and not running

    def interrupt(self, prompt_id: str) -> None:
        """Interrupt `prompt_id` if it runs, and drop it if it still waits in the queue."""
        self.session.post(
            f"{self.base_url}/interrupt", json={"prompt_id": prompt_id}, timeout=_TIMEOUT_S
        )
        self.session.post(
            f"{self.base_url}/queue", json={"delete": [prompt_id]}, timeout=_TIMEOUT_S
        )
