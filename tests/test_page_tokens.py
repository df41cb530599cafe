"""Page tokens of `GET /jobs` as pure functions (services/job_list.py) and the key they are
signed with (services/_page_key.py) over the in-memory blob store; the API's answers to them
are in tests/test_api_list_wait.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from comfyburst.domain.job_query import JobQuery
from comfyburst.errors import InvalidRequest
from comfyburst.services import job_list
from comfyburst.services._page_key import KEY_BYTES, KEY_OBJECT, PageTokenKey
from tests.fakes import InMemoryBlobStore
from tests.test_webhooks import make_job

KEY = b"k" * 32
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))


def test_a_token_carries_its_cursor_in_utc_and_only_its_key_opens_it() -> None:
    query = JobQuery(owner="alice")
    token = job_list.encode_token(query, make_job("j-1", created_at=T0), KEY)
    cursor = job_list.decode_token(token, query, KEY)
    assert cursor.job_id == "j-1" and cursor.created_at == T0.astimezone(UTC)
    with pytest.raises(InvalidRequest, match="not one this API made"):
        job_list.decode_token(token, query, b"o" * 32)
    with pytest.raises(InvalidRequest, match="other filters"):
        job_list.decode_token(token, JobQuery(owner="bob"), KEY)


def test_the_key_is_made_once_and_shared() -> None:
    blobs = InMemoryBlobStore()
    first = PageTokenKey(blobs, "jobs-b").get()
    assert len(first) == KEY_BYTES and blobs.read("jobs-b", KEY_OBJECT) == first
    assert PageTokenKey(blobs, "jobs-b").get() == first  # another instance, the same key


def test_an_instance_that_loses_the_race_to_make_the_key_takes_the_winners() -> None:
    class RacedStore(InMemoryBlobStore):
        """Another instance writes its key between this one's read and its create."""

        def write(self, bucket, name, data, content_type="", if_generation_match=None):  # type: ignore[no-untyped-def]
            if if_generation_match == 0 and self.read(bucket, name) is None:
                super().write(bucket, name, b"w" * KEY_BYTES)
            return super().write(bucket, name, data, content_type, if_generation_match)

    assert PageTokenKey(RacedStore(), "jobs-b").get() == b"w" * KEY_BYTES
