"""HTTP client of the ComfyBurst API, shared by the CLI and the ComfyUI node.

Auth: an API key (`X-API-Key`), or a Google ID token for Cloud Run IAM — from a
service-account key file or Application Default Credentials (metadata server, gcloud).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import requests
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from comfyburst.errors import ComfyBurstError, SettingsError

TERMINAL = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
ENVIRONMENT_BUILT = frozenset({"ready", "failed"})  # an environment's build has ended
ID_TOKEN_REFRESH_MARGIN_S = 300
MAX_WAIT_S = 60.0  # the API's limit of GET /jobs/{id}?wait_s
# One server-side wait when nothing else needs checking: long enough to save calls, short
# enough that a dropped connection costs little.
LONG_WAIT_S = 25.0
# Cloud Storage takes resumable chunks in multiples of 256 KiB (all but the last).
RESUMABLE_CHUNK_MULTIPLE = 256 * 1024
UPLOAD_CHUNK_BYTES = 32 * RESUMABLE_CHUNK_MULTIPLE


class ClientSettings(BaseSettings):
    """Where the API is and how to authenticate (environment, prefix COMFYBURST_)."""

    model_config = SettingsConfigDict(env_prefix="COMFYBURST_", extra="ignore")

    api_url: str | None = Field(default=None, description="Base URL of the deployed API")
    api_key: str | None = Field(default=None, description="API key (api_key auth mode)")
    id_token_audience: str | None = Field(
        default=None, description="Audience for the Google ID token; default: the API URL"
    )
    credentials_file: str | None = Field(
        default=None, description="Service-account key file for ID tokens; default: ADC"
    )
    auth: str = Field(default="auto", description="auto | api_key | id_token | none")
    timeout_s: float = Field(default=30.0, description="HTTP timeout of each API call, seconds")

    def require_url(self) -> str:
        if not self.api_url:
            raise SettingsError(
                "ComfyBurst API URL is not set: set COMFYBURST_API_URL "
                "(or api_url in the settings file)"
            )
        return self.api_url.rstrip("/")


class ApiError(ComfyBurstError):
    """The API answered with an error; `status` and the machine-readable `body` kept."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = error.get("message") if isinstance(error, dict) else None
        super().__init__(message or f"API answered HTTP {status}")
        self.status = status
        self.body = body
        self.code = (error.get("code") if isinstance(error, dict) else None) or "api_error"

    @property
    def node_errors(self) -> dict[str, Any]:
        """ComfyUI-shaped node errors of a pre-flight rejection (empty otherwise)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("node_errors"), dict):
            return self.body["node_errors"]
        return {}

    @property
    def comfy_error(self) -> dict[str, Any] | None:
        """ComfyUI's own error of a pre-flight rejection (`error.details`); None otherwise."""
        error = self.body.get("error") if isinstance(self.body, dict) else None
        details = error.get("details") if isinstance(error, dict) else None
        return details if isinstance(details, dict) else None

    def node_error_lines(self) -> list[str]:
        """One readable line per node error, in node order (for messages to people)."""
        return [
            f"  node {node_id} ({node.get('class_type')}): {err.get('message')}"
            f" — {err.get('details')}"
            for node_id, node in sorted(self.node_errors.items())
            for err in node.get("errors", [])
        ]


class _IdTokenSource:
    """Google ID tokens for one audience, refreshed before they expire."""

    def __init__(self, audience: str, credentials_file: str | None) -> None:
        self._audience = audience
        self._credentials_file = credentials_file
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.time() > self._expires_at - ID_TOKEN_REFRESH_MARGIN_S:
                self._token, self._expires_at = self._fetch()
            return self._token

    def _fetch(self) -> tuple[str, float]:
        import google.auth.transport.requests
        import google.oauth2.id_token
        from google.oauth2 import service_account

        request = google.auth.transport.requests.Request()
        if self._credentials_file:
            creds = service_account.IDTokenCredentials.from_service_account_file(
                self._credentials_file, target_audience=self._audience
            )
            creds.refresh(request)
            expiry = creds.expiry.timestamp() if creds.expiry else time.time() + 3000
            return creds.token, expiry
        token = google.oauth2.id_token.fetch_id_token(request, self._audience)
        # Google ID tokens live one hour; refresh well before that.
        return token, time.time() + 3600


class ApiClient:
    """Submit, watch, cancel jobs on a ComfyBurst API."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = settings.require_url()
        self._settings = settings
        self._session = session or requests.Session()
        self._id_tokens: _IdTokenSource | None = None
        mode = settings.auth
        if mode == "auto":
            mode = "api_key" if settings.api_key else "none"
            if not settings.api_key and (
                settings.credentials_file or self.base_url.startswith("https://")
            ):
                mode = "id_token"
        if mode == "api_key" and not settings.api_key:
            raise SettingsError("auth is api_key but COMFYBURST_API_KEY is not set")
        if mode == "id_token":
            audience = settings.id_token_audience or self.base_url
            self._id_tokens = _IdTokenSource(audience, settings.credentials_file)
        self.auth_mode = mode

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.auth_mode == "api_key" and self._settings.api_key:
            headers["X-API-Key"] = self._settings.api_key
        elif self._id_tokens is not None:
            headers["Authorization"] = f"Bearer {self._id_tokens.token()}"
        return headers

    def _call(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        extra_timeout_s: float = 0.0,
    ) -> Any:
        response = self._session.request(
            method,
            f"{self.base_url}{path}",
            json=json_body,
            params=params,
            headers={**self._headers(), **(headers or {})},
            timeout=self._settings.timeout_s + extra_timeout_s,
        )
        body = _json_body(response)
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        return body

    def submit(self, request: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /jobs; the same idempotency key never makes a second job."""
        key = idempotency_key or str(uuid.uuid4())
        return self._call("POST", "/jobs", request, {"Idempotency-Key": key})

    def validate(self, request: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/jobs:validate", request)

    def get(self, job_id: str, wait_s: float | None = None) -> dict[str, Any]:
        """GET /jobs/{id}; with `wait_s` (at most 60) the API answers as soon as the job's state
        or progress changes, or after `wait_s` with the job as it is."""
        if wait_s is None:
            return self._call("GET", f"/jobs/{job_id}")
        wait_s = max(0.0, min(wait_s, MAX_WAIT_S))
        params = {"wait_s": f"{wait_s:g}"}
        return self._call("GET", f"/jobs/{job_id}", params=params, extra_timeout_s=wait_s)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}:cancel")

    def gpu_classes(self) -> dict[str, Any]:
        """GET /gpu-classes: the classes a job may ask for (`gpu_classes`, `default`)."""
        return self._call("GET", "/gpu-classes")

    def usage(
        self, *, start: str | None = None, end: str | None = None, group_by: str | None = None
    ) -> dict[str, Any]:
        """GET /usage: receipts summed per caller, class or day (`rows`, `total`); the
        caller's own, every caller's for an admin. Times are RFC 3339 with a zone."""
        given = {"from": start, "to": end, "group_by": group_by}
        return self._call("GET", "/usage", params={k: v for k, v in given.items() if v})

    def list_jobs(
        self,
        *,
        states: list[str] | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> dict[str, Any]:
        """GET /jobs: one page of the caller's jobs, newest first (`jobs`, `next_page_token`)."""
        params: dict[str, Any] = {}
        if states:
            params["state"] = ",".join(states)
        if page_size is not None:
            params["page_size"] = page_size
        if page_token:
            params["page_token"] = page_token
        return self._call("GET", "/jobs", params=params)

    def create_environment(self, packs: list[str]) -> dict[str, Any]:
        """POST /environments: the environment of these pinned packs (the same set, the same
        one); a new one is `building` until its build job ends."""
        return self._call("POST", "/environments", {"packs": packs})

    def get_environment(self, environment_id: str) -> dict[str, Any]:
        return self._call("GET", f"/environments/{environment_id}")

    def list_environments(self) -> dict[str, Any]:
        """GET /environments: the caller's environments, most recently asked for first."""
        return self._call("GET", "/environments")

    def wait_environment(
        self,
        environment_id: str,
        *,
        timeout_s: float,
        poll_s: float = 2.0,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the environment until it is ready or failed; TimeoutError after `timeout_s`
        (the API has no server-side wait for environments, and a build takes minutes)."""
        deadline = time.monotonic() + timeout_s
        while True:
            env = self.get_environment(environment_id)
            if on_update is not None:
                on_update(env)
            if env.get("state") in ENVIRONMENT_BUILT:
                return env
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"environment {environment_id} still {env.get('state')} after {timeout_s:g} s"
                )
            time.sleep(min(poll_s, left))

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Wait until the job is terminal; `should_cancel` returning True cancels it remotely.

        Each call waits on the server (`GET /jobs/{id}?wait_s=…`), which answers at each
        change of state or progress: no poll loop. `should_cancel` is asked at least every
        `poll_s` seconds (each wait is that short when it is given)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        cancel_sent = False
        wait_s: float | None = 0.0  # the first answer comes at once
        while True:
            job = self.get(job_id, wait_s=wait_s)
            if on_update is not None:
                on_update(job)
            if job.get("state") in TERMINAL:
                return job
            if should_cancel is not None and not cancel_sent and should_cancel():
                self.cancel(job_id)
                cancel_sent = True
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.get('state')} after {timeout_s} s")
            wait_s = poll_s if should_cancel is not None else LONG_WAIT_S
            if deadline is not None:
                wait_s = max(0.0, min(wait_s, deadline - time.monotonic()))

    def preview(self, job_id: str) -> tuple[bytes, str] | None:
        """GET /jobs/{id}/preview: (image bytes, content type) of the running job's latest
        preview frame, or None when it has none (204)."""
        response = self._session.get(
            f"{self.base_url}/jobs/{job_id}/preview",
            headers={**self._headers(), "Accept": "image/*"},
            timeout=self._settings.timeout_s,
        )
        if response.status_code >= 400:
            raise ApiError(response.status_code, _json_body(response))
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if response.status_code == 204 or not content_type.startswith("image/"):
            return None
        return response.content, content_type

    def fetch(self, url: str) -> bytes:
        """The bytes behind a (signed) output URL."""
        response = self._session.get(url, timeout=self._settings.timeout_s)
        response.raise_for_status()
        return response.content

    def download(self, url: str, path: str, chunk_bytes: int = 1 << 20) -> int:
        """Save a (signed) output URL to a file; returns the byte count."""
        written = 0
        with self._session.get(url, stream=True, timeout=self._settings.timeout_s) as response:
            response.raise_for_status()
            with open(path, "wb") as fh:
                for chunk in response.iter_content(chunk_bytes):
                    fh.write(chunk)
                    written += len(chunk)
        return written

    # --- model uploads (POST /uploads, then the Cloud Storage resumable session) -----------

    def start_upload(
        self, sha256: str, size_bytes: int, md5_b64: str | None = None
    ) -> dict[str, Any]:
        """POST /uploads: `exists`, the `url` a job names, else a resumable `session_url`."""
        body: dict[str, Any] = {"sha256": sha256, "size_bytes": size_bytes}
        if md5_b64 is not None:
            body["md5_b64"] = md5_b64
        return self._call("POST", "/uploads", body)

    def send_file(
        self,
        session_url: str,
        path: str,
        size_bytes: int,
        *,
        on_progress: Callable[[int], None] | None = None,
        chunk_bytes: int = UPLOAD_CHUNK_BYTES,
        max_retries: int = 5,
    ) -> None:
        """PUT a file into a resumable upload session, chunk by chunk (`Content-Range`); after
        a failed chunk, ask the session what it holds (`bytes */SIZE`) and go on from there.
        `on_progress` gets the bytes the session has committed."""
        if chunk_bytes % RESUMABLE_CHUNK_MULTIPLE:
            raise ValueError(f"chunk_bytes must be a multiple of {RESUMABLE_CHUNK_MULTIPLE}")
        offset, failures = 0, 0
        with open(path, "rb") as fh:
            while offset < size_bytes:
                fh.seek(offset)
                data = fh.read(min(chunk_bytes, size_bytes - offset))
                last = offset + len(data) - 1
                try:
                    response = self._session.put(
                        session_url,
                        data=data,
                        headers={"Content-Range": f"bytes {offset}-{last}/{size_bytes}"},
                        timeout=self._settings.timeout_s,
                    )
                except requests.RequestException:
                    response = None
                if response is not None and response.status_code in (200, 201):
                    offset = size_bytes
                elif response is not None and response.status_code == 308:
                    offset, failures = _committed(response), 0
                elif response is not None and response.status_code < 500:
                    raise ApiError(response.status_code, _upload_error(response))
                else:
                    failures += 1
                    if failures > max_retries:
                        raise ApiError(503, _upload_error(response))
                    time.sleep(min(2.0**failures * 0.1, 5.0))
                    offset = self._session_offset(session_url, size_bytes)
                if on_progress is not None:
                    on_progress(offset)

    def _session_offset(self, session_url: str, size_bytes: int) -> int:
        response = self._session.put(
            session_url,
            headers={"Content-Range": f"bytes */{size_bytes}", "Content-Length": "0"},
            timeout=self._settings.timeout_s,
        )
        if response.status_code in (200, 201):
            return size_bytes
        if response.status_code == 308:
            return _committed(response)
        raise ApiError(response.status_code, _upload_error(response))


def _json_body(response: requests.Response) -> Any:
    """The answer's JSON; a body that is not JSON becomes a machine-readable error."""
    try:
        return response.json()
    except ValueError:
        return {"error": {"code": "bad_response", "message": response.text[:500]}}


def _committed(response: requests.Response) -> int:
    """The bytes a 308 says the session holds: `Range: bytes=0-N` → N + 1; none → 0."""
    value = response.headers.get("Range", "")
    _, _, last = value.partition("-")
    return int(last) + 1 if last.isdigit() else 0


def _upload_error(response: requests.Response | None) -> dict[str, Any]:
    if response is None:
        return {"error": {"code": "upload_failed", "message": "the upload kept failing"}}
    text = response.text[:300]
    return {"error": {"code": "upload_failed", "message": f"{response.status_code}: {text}"}}
