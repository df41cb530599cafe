"""What a job list asks for: the caller, filters, page size and the cursor to continue after
(pure values; services/job_list.py parses requests into it, the job views adapter runs it)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from comfyburst.states import JobState

DEFAULT_PAGE_SIZE = 20


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    job_id: str


@dataclass(frozen=True)
class JobQuery:
    """What to list: the jobs whose caller is `owner` (None: jobs created without a caller),
    or every caller's jobs with `all_callers` (admins only)."""

    owner: str | None
    all_callers: bool = False
    states: tuple[JobState, ...] = ()
    created_after: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    page_size: int = DEFAULT_PAGE_SIZE
    after: Cursor | None = None
    # `key=value` texts (domain/labels.py) a listed job carries every one of.
    labels: tuple[str, ...] = ()

    def filter_digest(self) -> str:
        text = json.dumps(
            [
                "*" if self.all_callers else self.owner,
                sorted(s.value for s in self.states),
                self.created_after.isoformat() if self.created_after else None,
                self.created_before.isoformat() if self.created_before else None,
                *([sorted(self.labels)] if self.labels else []),
            ]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]
