"""Firestore documents of the pydantic models, both ways, and the idempotency documents' ids;
the Firestore adapters (`firestore_store.py` and its siblings) share them."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel

from comfyburst.schema import Job

M = TypeVar("M", bound=BaseModel)

# Document ids cannot contain '/', be '.' or '..', or look like '__x__'; such keys are hashed.
_SAFE_ID = re.compile(r"^(?!__.*__$)(?!\.{1,2}$)[A-Za-z0-9._:\-]{1,200}$")


def convert(value: Any) -> Any:
    """The one converter between pydantic data and Firestore values, used both ways.

    Models are dumped, enums become their values, datetimes become plain aware UTC datetimes
    (Firestore stores them as timestamps and returns DatetimeWithNanoseconds; naive ones are
    taken as UTC). Containers are converted recursively.
    """
    if isinstance(value, BaseModel):
        return convert(value.model_dump(mode="python"))
    if isinstance(value, datetime):
        utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        # DatetimeWithNanoseconds is a datetime subclass; rebuild a plain one for pydantic.
        return datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=UTC)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: convert(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [convert(v) for v in value]
    return value


def to_doc(model: BaseModel) -> dict[str, Any]:
    doc: dict[str, Any] = convert(model)
    return doc


def from_doc(cls: type[M], data: dict[str, Any] | None) -> M:
    return cls.model_validate(convert(data or {}))


def idempotency_doc_id(key: str) -> str:
    """The idempotency document id for a caller's key (hashed when not a safe id)."""
    if _SAFE_ID.match(key):
        return key
    return "sha256-" + hashlib.sha256(key.encode()).hexdigest()


def job_doc(job: Job) -> dict[str, Any]:
    """The Firestore document of a job (for tests and tools that seed data)."""
    return to_doc(job)
