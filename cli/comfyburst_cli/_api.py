"""The API client the commands use: settings from the environment, or the local cloud's
`.localcloud/env` outside a configured shell."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from comfyburst.client import ApiClient, ClientSettings

LOCAL_ENV = Path(".localcloud/env")


def load_env_file(path: Path) -> dict[str, str]:
    """Read the `export K=V` lines the local cloud writes."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            values[key] = shlex.split(value)[0] if value else ""
    return values


def use_local_env(key: str) -> None:
    """Outside a configured shell, the local cloud's `.localcloud/env` (when there is one)."""
    if not os.environ.get(key) and LOCAL_ENV.exists():
        for name, value in load_env_file(LOCAL_ENV).items():
            os.environ.setdefault(name, value)


def api_client() -> ApiClient:
    use_local_env("COMFYBURST_API_URL")
    return ApiClient(ClientSettings())
