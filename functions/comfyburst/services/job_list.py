"""Job lists: a caller's jobs, newest first, filtered by state and creation time, paged.

The page token is opaque to callers: base64url JSON of the last job's `created_at` and id plus
a digest of the filters it was made for, so a token is refused (400, field `page_token`) when
it is malformed or used with other filters. Ordering is (created_at, job_id) descending, so a
page boundary between two jobs created in the same microsecond is still exact.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from comfyburst.domain.job_query import DEFAULT_PAGE_SIZE, Cursor, JobQuery
from comfyburst.errors import InvalidRequest
from comfyburst.schema import Job
from comfyburst.states import JobState

MAX_PAGE_SIZE = 100


class JobLister(Protocol):
    def list_page(self, query: JobQuery, limit: int) -> list[Job]:
        """Up to `limit` jobs matching `query`, newest first, after `query.after`."""
        ...


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_page_token: str | None


def encode_token(query: JobQuery, last: Job) -> str:
    payload = {"c": last.created_at.isoformat(), "j": last.job_id, "f": query.filter_digest()}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, query: JobQuery) -> Cursor:
    def bad(why: str) -> InvalidRequest:
        return InvalidRequest(f"page_token {why}", field="page_token")

    if not token or len(token) > 512 or not token.isascii():
        raise bad("is not one this API made")
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        created_at = datetime.fromisoformat(payload["c"])
        job_id = payload["j"]
        digest = payload["f"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise bad("is not one this API made") from None
    if not isinstance(job_id, str) or created_at.tzinfo is None:
        raise bad("is not one this API made")
    if digest != query.filter_digest():
        raise bad("belongs to a list with other filters")
    return Cursor(created_at, job_id)


def parse_query(
    args: Mapping[str, Sequence[str]], owner: str | None, *, all_callers: bool = False
) -> JobQuery:
    """The query of `GET /jobs?state=…&created_after=…&created_before=…&page_size=…
    &page_token=…`; `state` may repeat or hold a comma-separated list."""
    allowed = {"state", "created_after", "created_before", "page_size", "page_token"}
    for name in args:
        if name not in allowed:
            raise InvalidRequest(f"unknown query parameter {name!r}", field=name)
    states: list[JobState] = []
    for value in args.get("state", []):
        for item in value.split(","):
            try:
                states.append(JobState(item.strip()))
            except ValueError:
                names = ", ".join(s.value for s in JobState)
                raise InvalidRequest(
                    f"state must be one of {names}, not {item!r}", field="state"
                ) from None
    query = JobQuery(
        owner=owner,
        all_callers=all_callers,
        states=tuple(dict.fromkeys(states)),
        created_after=_time(args, "created_after"),
        created_before=_time(args, "created_before"),
        page_size=_page_size(args),
    )
    token = _single(args, "page_token")
    if token is not None:
        query = JobQuery(**{**query.__dict__, "after": decode_token(token, query)})
    return query


def list_jobs(lister: JobLister, query: JobQuery) -> JobPage:
    jobs = lister.list_page(query, query.page_size + 1)
    more = len(jobs) > query.page_size
    jobs = jobs[: query.page_size]
    token = encode_token(query, jobs[-1]) if more and jobs else None
    return JobPage(jobs, token)


def _single(args: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = list(args.get(name, []))
    if len(values) > 1:
        raise InvalidRequest(f"{name} may be given once", field=name)
    return values[0] if values else None


def _time(args: Mapping[str, Sequence[str]], name: str) -> datetime | None:
    value = _single(args, name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidRequest(
            f"{name} must be an RFC 3339 time with a zone, e.g. 2026-01-31T12:00:00Z",
            field=name,
        )
    return parsed


def _page_size(args: Mapping[str, Sequence[str]]) -> int:
    value = _single(args, "page_size")
    if value is None:
        return DEFAULT_PAGE_SIZE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise InvalidRequest(
            f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}", field="page_size"
        )
    return int(value)
