"""Where the API is and how to authenticate: environment first, then a settings file in
ComfyUI's user folder (`comfyburst.json`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from . import _comfy
from ._vendor.comfyburst_core.client import ApiClient, ClientSettings
from ._vendor.comfyburst_core.errors import SettingsError

SETTINGS_FILE_NAME = "comfyburst.json"
ENV_PREFIX = "COMFYBURST_"


def settings_file(user_dir: str | None) -> Path | None:
    return Path(user_dir) / SETTINGS_FILE_NAME if user_dir else None


def load_client_settings(user_dir: str | None) -> ClientSettings:
    """Environment variables override the settings file; a clear error when no URL is set."""
    path = settings_file(user_dir)
    file_values: dict[str, Any] = {}
    if path is not None and path.exists():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{path} is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
        if not isinstance(loaded, dict):
            raise SettingsError(f"{path} must hold a JSON object")
        known = set(ClientSettings.model_fields)
        unknown = sorted(set(loaded) - known)
        if unknown:
            raise SettingsError(
                f"{path}: unknown settings {', '.join(unknown)}; known: {sorted(known)}"
            )
        file_values = {
            k: v for k, v in loaded.items() if f"{ENV_PREFIX}{k.upper()}" not in os.environ
        }
    settings = ClientSettings(**file_values)
    if not settings.api_url:
        where = f" or api_url in {path}" if path is not None else ""
        raise SettingsError(f"ComfyBurst is not configured: set COMFYBURST_API_URL{where}")
    return settings


def make_client() -> ApiClient:
    """The API client for this ComfyUI's settings (its user folder's settings file)."""
    return ApiClient(load_client_settings(_comfy.user_directory()))
