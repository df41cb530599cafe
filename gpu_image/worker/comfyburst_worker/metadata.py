"""The GCE metadata server: this VM's name, zone and the attributes the dispatcher sets."""

from __future__ import annotations

import os

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from comfyburst.domain.gpu_classes import CLASS_METADATA_KEY
from comfyburst.schema import DeploymentConfig

CONFIG_KEY = "comfyburst-config"
_DEFAULT_HOST = "metadata.google.internal"
_TIMEOUT_S = 5.0


class _Transient(Exception):
    """A brief 503 or a dropped connection; the real server has them."""


class MetadataClient:
    """Plain HTTP reads of `/computeMetadata/v1/...` with `Metadata-Flavor: Google`."""

    def __init__(self, host: str | None = None, session: requests.Session | None = None) -> None:
        # Same variable google-auth honours, so the local cloud points both at its server.
        self.host = host or os.environ.get("GCE_METADATA_HOST") or _DEFAULT_HOST
        self._session = session or requests.Session()

    @retry(
        retry=retry_if_exception_type(_Transient),
        stop=stop_after_attempt(6),
        wait=wait_exponential(multiplier=0.1, max=2.0),
        reraise=True,
    )
    def get(self, path: str) -> str | None:
        """The value at `path` (e.g. 'instance/name'); None when absent (404)."""
        url = f"http://{self.host}/computeMetadata/v1/{path}"
        try:
            resp = self._session.get(url, headers={"Metadata-Flavor": "Google"}, timeout=_TIMEOUT_S)
        except requests.ConnectionError as exc:
            raise _Transient(str(exc)) from exc
        if resp.status_code == 404:
            return None
        if resp.status_code in (500, 502, 503, 504):
            raise _Transient(f"metadata {path}: HTTP {resp.status_code}")
        resp.raise_for_status()
        return resp.text

    def instance_name(self) -> str:
        value = self.get("instance/name")
        if not value:
            raise RuntimeError("metadata has no instance/name")
        return value.strip()

    def zone(self) -> str:
        """The zone's short name (the server answers `projects/N/zones/Z`)."""
        value = self.get("instance/zone")
        if not value:
            raise RuntimeError("metadata has no instance/zone")
        return value.strip().rsplit("/", 1)[-1]

    def attribute(self, key: str) -> str | None:
        value = self.get(f"instance/attributes/{key}")
        return value.strip() if value is not None else None

    def gpu_class(self) -> str | None:
        """This VM's GPU class, if the dispatcher named one (else: the default class); an
        attribute, because the metadata server serves custom metadata but not labels."""
        return self.attribute(CLASS_METADATA_KEY) or None

    def deployment_config(self) -> DeploymentConfig:
        raw = self.attribute(CONFIG_KEY)
        if not raw:
            raise RuntimeError(f"metadata has no instance/attributes/{CONFIG_KEY}")
        return DeploymentConfig.model_validate_json(raw)
