"""Job lists: a caller's jobs, newest first, filtered by state and creation time, paged.

The page token is opaque to callers: base64url JSON of the last job's `created_at` and id plus
a digest of the filters it was made for, and an HMAC-SHA256 tag over those bytes with the
deployment's page-token key (`services/_page_key.py`). Only tokens this API made are taken: a
hand-made or altered one, or one used with other filters, is refused (400, field
`page_token`) before anything is queried. Times are taken only within the range Firestore
stores (years 1 to 9999 in UTC), each refused naming its field. Ordering is (created_at,
job_id) descending, so a page boundary between two jobs created in the same microsecond is
still exact.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from comfyburst.domain.job_query import DEFAULT_PAGE_SIZE, Cursor, JobQuery
from comfyburst.domain.query_args import single_arg
from comfyburst.errors import InvalidRequest
from comfyburst.schema import Job
from comfyburst.states import JobState

MAX_PAGE_SIZE = 100
MAX_TOKEN_CHARS = 512
TOKEN_TAG_BYTES = 16  # HMAC-SHA256 truncated to 128 bits
# The job ids this API makes (and its routes take); a token never carries another.
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class JobLister(Protocol):
    def list_page(self, query: JobQuery, limit: int) -> list[Job]:
        """Up to `limit` jobs matching `query`, newest first, after `query.after`."""
        ...


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_page_token: str | None


def encode_token(query: JobQuery, last: Job, key: bytes) -> str:
    payload = {"c": last.created_at.isoformat(), "j": last.job_id, "f": query.filter_digest()}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return f"{_b64(raw)}.{_b64(_tag(key, raw))}"


def decode_token(token: str, query: JobQuery, key: bytes) -> Cursor:
    """The cursor of a token this API made for this query, or InvalidRequest (`page_token`)."""

    def bad(why: str = "is not one this API made") -> InvalidRequest:
        return InvalidRequest(f"page_token {why}", field="page_token")

    if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise bad()
    body, _, tag = token.partition(".")
    try:
        raw, mac = _unb64(body), _unb64(tag)
    except (binascii.Error, ValueError):
        raise bad() from None
    if not hmac.compare_digest(mac, _tag(key, raw)):
        raise bad()
    # Made here, so well-formed; checked again all the same, so a leaked key forges nothing
    # the query could not take.
    try:
        payload = json.loads(raw)
        created_at = _in_range(datetime.fromisoformat(payload["c"]))
        job_id = payload["j"]
        digest = payload["f"]
    except (ValueError, KeyError, TypeError, OverflowError):
        raise bad() from None
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise bad()
    if digest != query.filter_digest():
        raise bad("belongs to a list with other filters")
    return Cursor(created_at, job_id)


def _tag(key: bytes, raw: bytes) -> bytes:
    return hmac.new(key, raw, hashlib.sha256).digest()[:TOKEN_TAG_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _in_range(value: datetime) -> datetime:
    """`value` in UTC; OverflowError (years 1 to 9999 in UTC, Firestore's range, both ends
    being Python's) or ValueError (no zone) otherwise."""
    if value.tzinfo is None:
        raise ValueError("a time without a zone")
    return value.astimezone(UTC)


def parse_query(
    args: Mapping[str, Sequence[str]],
    owner: str | None,
    *,
    all_callers: bool = False,
    token_key: bytes,
    labels: tuple[str, ...] = (),
) -> JobQuery:
    """The query of `GET /jobs?state=…&created_after=…&created_before=…&page_size=…
    &page_token=…`; `state` may repeat or hold a comma-separated list. `labels`: checked
    label filters (domain/labels.check_filters), part of what a page token is made for."""
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
        labels=labels,
    )
    token = single_arg(args, "page_token")
    if token is not None:
        query = JobQuery(**{**query.__dict__, "after": decode_token(token, query, token_key)})
    return query


def list_jobs(lister: JobLister, query: JobQuery, token_key: bytes) -> JobPage:
    jobs = lister.list_page(query, query.page_size + 1)
    more = len(jobs) > query.page_size
    jobs = jobs[: query.page_size]
    token = encode_token(query, jobs[-1], token_key) if more and jobs else None
    return JobPage(jobs, token)


def _time(args: Mapping[str, Sequence[str]], name: str) -> datetime | None:
    value = single_arg(args, name)
    if value is None:
        return None
    try:
        return _in_range(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise InvalidRequest(
            f"{name} must be an RFC 3339 time with a zone, e.g. 2026-01-31T12:00:00Z",
            field=name,
        ) from None
    except OverflowError:
        raise InvalidRequest(
            f"{name} must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z",
            field=name,
        ) from None


def _page_size(args: Mapping[str, Sequence[str]]) -> int:
    value = single_arg(args, "page_size")
    if value is None:
        return DEFAULT_PAGE_SIZE
    # ASCII digits only, few of them: str.isdigit() admits "²", which int() refuses.
    if not re.fullmatch(r"[0-9]{1,6}", value) or not 1 <= int(value) <= MAX_PAGE_SIZE:
        raise InvalidRequest(
            f"page_size must be a whole number from 1 to {MAX_PAGE_SIZE}", field="page_size"
        )
    return int(value)
