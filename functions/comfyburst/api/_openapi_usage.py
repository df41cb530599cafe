"""The `/usage` route of the OpenAPI document (api/openapi.py merges it in)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from comfyburst.domain.usage import MAX_RANGE_DAYS, GroupBy, UsageReport

MODELS: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
    (UsageReport, "serialization"),
]


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    """An optional query parameter (the API's list and usage routes)."""
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def usage_paths(
    refs: dict[str, Any], json_: Callable[..., dict[str, Any]], errors: Callable[..., Any]
) -> dict[str, Any]:
    """`GET /usage`."""

    time = {"type": "string", "format": "date-time"}
    too_large = (
        "Code `usage_range_too_large`: more jobs finished in the range than one answer reads; "
        "ask for a shorter range"
    )
    return {
        "/usage": {
            "get": {
                "operationId": "getUsage",
                "summary": "What terminal jobs cost: their receipts summed per caller, GPU class "
                "or UTC day (the caller's own jobs; an admin's: every caller's). The VMs' idle "
                "after jobs is shown apart from cost_usd",
                "parameters": [
                    query(
                        "from",
                        time,
                        "Jobs finished at or after this time (RFC 3339 with a zone; default: "
                        "the start of this month, UTC).",
                    ),
                    query("to", time, "Jobs finished before this time (default: now)."),
                    query(
                        "group_by",
                        {"enum": [g.value for g in GroupBy]},
                        f"One row per caller (default), class or day; from and to at most "
                        f"{MAX_RANGE_DAYS} days apart.",
                    ),
                ],
                "responses": {
                    "200": json_(refs["UsageReport"], "The rows and their total"),
                    "422": json_(refs["ErrorBody"], too_large),
                    **errors(refs, 400),
                },
            }
        }
    }
