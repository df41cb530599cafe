"""Model-host tokens from Secret Manager, read once per agent; never logged."""

from __future__ import annotations

import logging
from typing import Any

from comfyburst.schema import DeploymentConfig

log = logging.getLogger(__name__)

CIVITAI_HOST = "civitai.com"
HUGGINGFACE_HOST = "huggingface.co"


def _secret_path(project_id: str, name: str) -> str:
    if name.startswith("projects/"):
        return name if "/versions/" in name else f"{name}/versions/latest"
    return f"projects/{project_id}/secrets/{name}/versions/latest"


def load_auth_headers(config: DeploymentConfig, client: Any = None) -> dict[str, str]:
    """host -> 'Bearer TOKEN' for each token the deployment names; missing ones are skipped."""
    wanted = {
        CIVITAI_HOST: config.civitai_token_secret,
        HUGGINGFACE_HOST: config.huggingface_token_secret,
    }
    if not any(wanted.values()):
        return {}
    if client is None:
        from google.cloud import secretmanager

        client = secretmanager.SecretManagerServiceClient()
    headers: dict[str, str] = {}
    for host, secret in wanted.items():
        if not secret:
            continue
        try:
            response = client.access_secret_version(name=_secret_path(config.project_id, secret))
        except Exception as exc:
            # The name of the secret is not secret; its value never reaches a log.
            log.warning("token secret %s for %s unreadable: %s", secret, host, type(exc).__name__)
            continue
        token = response.payload.data.decode().strip()
        if token:
            headers[host] = f"Bearer {token}"
    return headers
