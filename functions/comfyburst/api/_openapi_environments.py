"""The environment routes of the OpenAPI document (api/openapi.py merges them in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from comfyburst.api.views import EnvironmentList, EnvironmentView
from comfyburst.domain.environments import ENV_ID_PATTERN
from comfyburst.services.environments import EnvironmentRequest

MODELS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (EnvironmentRequest, "validation"),
    (EnvironmentView, "serialization"),
    (EnvironmentList, "serialization"),
]

_OFF = (
    " Off until the deployer lists custom_node_sources: every environment request answers "
    "403 `environments_disabled`."
)


def environment_paths(
    refs: dict[str, Any], json_: Callable[..., dict[str, Any]], errors: Callable[..., Any]
) -> dict[str, Any]:
    """`/environments` and `/environments/{environment_id}`."""
    view = refs["EnvironmentView"]
    environment_id = {
        "name": "environment_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": ENV_ID_PATTERN},
    }
    return {
        "/environments": {
            "post": {
                "operationId": "createEnvironment",
                "summary": "Ask for the environment of a set of pinned custom-node packs; the "
                "same set answers the same environment. A new one is `building`: a build job "
                "on a VM of the default class makes its layer; jobs may name it once it is "
                "`ready`. A caller at its `max_environments` (caller_limits) asking for one "
                "new to it answers 403 `environment_limit_reached` (error.details: "
                "max_environments, environments); a registry pack (`ID@VERSION`) where the "
                "deployment names no registry (custom_node_registry_url) answers 403 "
                "`registry_not_configured`; nothing is written." + _OFF,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": refs["EnvironmentRequest"]}},
                },
                "responses": {
                    "201": json_(view, "Created (building)"),
                    "200": json_(view, "Asked for before: the stored environment"),
                    **errors(refs, 400, 413),
                },
            },
            "get": {
                "operationId": "listEnvironments",
                "summary": "The environments the caller asked for, most recent first (100)." + _OFF,
                "responses": {
                    "200": json_(refs["EnvironmentList"], "The caller's environments"),
                    **errors(refs),
                },
            },
        },
        "/environments/{environment_id}": {
            "get": {
                "operationId": "getEnvironment",
                "summary": "One environment; another caller's private one answers 404 like a "
                "missing one." + _OFF,
                "parameters": [environment_id],
                "responses": {"200": json_(view, "The environment"), **errors(refs, 404)},
            }
        },
    }
