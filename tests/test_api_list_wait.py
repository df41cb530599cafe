"""`GET /jobs` (the caller's jobs, newest first, filtered, paged) and
`GET /jobs/{id}?wait_s=N` (answers when the job changes) on the Firestore emulator, through the
API app of functions/main.py."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from comfyburst.schema import Job, Progress
from comfyburst.states import JobState
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)
from tests.test_webhooks import make_job

pytestmark = pytest.mark.emulator

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _job(job_id: str, caller: str | None, created_at: datetime, state: JobState) -> Job:
    return make_job(job_id, None, state, caller=caller, created_at=created_at)


@pytest.fixture
def cloud(settings: Any, standin: Any, blob_store: Any, signer: Any, publisher: Any) -> Cloud:  # noqa: F811
    return Cloud(settings, standin, blob_store, signer, publisher)


@pytest.fixture
def seeded(cloud: Cloud) -> dict[str, list[str]]:
    """12 jobs of alice, 5 of bob, 2 without a caller; some share a creation time."""
    owned: dict[str, list[str]] = {"alice": [], "bob": [], "": []}
    for i in range(12):
        state = JobState.SUCCEEDED if i % 3 == 0 else JobState.QUEUED
        job = _job(f"alice-{i:02d}", "alice", T0 + timedelta(seconds=i // 2), state)
        cloud.store.create_job(job)
        owned["alice"].append(job.job_id)
    for i in range(5):
        job = _job(f"bob-{i}", "bob", T0 + timedelta(seconds=i), JobState.QUEUED)
        cloud.store.create_job(job)
        owned["bob"].append(job.job_id)
    for i in range(2):
        cloud.store.create_job(_job(f"anon-{i}", None, T0, JobState.FAILED))
    return owned


def _as(who: str) -> dict[str, str]:
    """The ID token Cloud Run would have checked (the local cloud does not verify it)."""

    def part(value: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    token = f"{part({'alg': 'RS256'})}.{part({'email': who})}.sig"
    return {"Authorization": f"Bearer {token}"}


def _all_pages(cloud: Cloud, who: str, query: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    token = None
    while True:
        url = f"/jobs?{query}" + (f"&page_token={token}" if token else "")
        response = cloud.client.get(url, headers=_as(who))
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        jobs += body["jobs"]
        token = body["next_page_token"]
        if token is None:
            return jobs


def test_list_shows_only_the_callers_jobs_newest_first_across_pages(
    cloud: Cloud, seeded: dict[str, list[str]]
) -> None:
    jobs = _all_pages(cloud, "alice", "page_size=5")
    ids = [job["job_id"] for job in jobs]
    assert sorted(ids) == sorted(seeded["alice"])  # every one, once, and nobody else's
    keys = [(job["created_at"], job["job_id"]) for job in jobs]
    assert keys == sorted(keys, reverse=True)
    bob = _all_pages(cloud, "bob", "page_size=2")
    assert sorted(job["job_id"] for job in bob) == sorted(seeded["bob"])
    # A caller with no jobs sees none, not the jobs created without a caller.
    assert _all_pages(cloud, "carol", "page_size=10") == []


def test_an_admin_lists_every_callers_jobs(
    settings: Any,  # noqa: F811
    standin: Any,  # noqa: F811
    blob_store: Any,
    signer: Any,
    publisher: Any,
    seeded: dict[str, list[str]],
) -> None:
    admin = settings.model_copy(update={"admin_principals": ["ops@example.com"]})
    cloud = Cloud(admin, standin, blob_store, signer, publisher)
    everyone = _all_pages(cloud, "ops@example.com", "page_size=7")
    assert len(everyone) == 12 + 5 + 2
    assert sorted(j["job_id"] for j in _all_pages(cloud, "bob", "")) == sorted(seeded["bob"])


def test_list_filters_by_state_and_creation_time(
    cloud: Cloud, seeded: dict[str, list[str]]
) -> None:
    done = _all_pages(cloud, "alice", "state=succeeded&page_size=3")
    assert {job["state"] for job in done} == {"succeeded"}
    assert len(done) == 4
    both = _all_pages(cloud, "alice", "state=succeeded&state=queued")
    assert len(both) == 12
    after = (T0 + timedelta(seconds=3)).isoformat().replace("+00:00", "Z")
    before = (T0 + timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    window = _all_pages(cloud, "alice", f"created_after={after}&created_before={before}")
    assert sorted(job["job_id"] for job in window) == [f"alice-{i:02d}" for i in range(6, 10)]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=sleeping", "state"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page_size=%C2%B2", "page_size"),  # "²": str.isdigit() says yes, int() says no
        ("page_size=" + "0" * 5000, "page_size"),  # past int()'s digit limit
        ("created_after=yesterday", "created_after"),
        ("created_after=2026-01-01T00:00:00", "created_after"),  # no zone
        ("page_token=garbage", "page_token"),
        ("owner=bob", "owner"),  # no way to ask for another caller's jobs
    ],
)
def test_list_refuses_bad_queries(cloud: Cloud, query: str, field: str) -> None:
    response = cloud.client.get(f"/jobs?{query}", headers=_as("alice"))
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == field


def test_a_page_token_only_continues_the_list_it_came_from(
    cloud: Cloud, seeded: dict[str, list[str]]
) -> None:
    first = cloud.client.get("/jobs?page_size=2", headers=_as("alice")).get_json()
    token = first["next_page_token"]
    assert token
    other_filter = cloud.client.get(f"/jobs?state=queued&page_token={token}", headers=_as("alice"))
    assert other_filter.status_code == 400
    other_caller = cloud.client.get(f"/jobs?page_token={token}", headers=_as("bob"))
    assert other_caller.status_code == 400


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("created_after=0001-01-01T00:00:00%2B01:00", "created_after"),  # year 0 in UTC
        ("created_before=9999-12-31T23:59:59-01:00", "created_before"),  # year 10000 in UTC
    ],
)
def test_times_outside_what_firestore_stores_are_refused_naming_the_field(
    cloud: Cloud, query: str, field: str
) -> None:
    response = cloud.client.get(f"/jobs?{query}", headers=_as("alice"))
    assert response.status_code == 400, response.get_data()[:300]
    assert response.get_json()["error"]["field"] == field


def test_the_ends_of_firestores_time_range_are_taken(
    cloud: Cloud, seeded: dict[str, list[str]]
) -> None:
    ends = "created_after=0001-01-01T00:00:00Z&created_before=9999-12-31T23:59:59.999999Z"
    assert len(_all_pages(cloud, "alice", ends)) == 12


def _hand_made(created_at: str, job_id: str) -> str:
    """A token of the shape the API's tokens have, for alice's unfiltered list, made by hand."""
    from comfyburst.domain.job_query import JobQuery

    payload = {"c": created_at, "j": job_id, "f": JobQuery(owner="alice").filter_digest()}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        _hand_made(T0.isoformat(), "a/b"),
        _hand_made(T0.isoformat(), ".."),
        _hand_made(T0.isoformat(), "__x__"),
        _hand_made(T0.isoformat(), ""),
        _hand_made("0001-01-01T00:00:00+01:00", "alice-03"),
        _hand_made(T0.isoformat(), "alice-03"),  # well-formed, but not made by this API
        _hand_made(T0.isoformat(), "alice-03") + ".AAAAAAAAAAAAAAAAAAAAAA",
    ],
    ids=["slash", "dotdot", "reserved_id", "empty_id", "time_out_of_range", "unsigned", "bad_tag"],
)
def test_only_page_tokens_the_api_made_are_taken(
    cloud: Cloud, seeded: dict[str, list[str]], token: str
) -> None:
    response = cloud.client.get(f"/jobs?page_token={token}", headers=_as("alice"))
    assert response.status_code == 400, response.get_data()[:300]
    assert response.get_json()["error"]["field"] == "page_token"


def test_an_altered_page_token_is_refused(cloud: Cloud, seeded: dict[str, list[str]]) -> None:
    token = cloud.client.get("/jobs?page_size=2", headers=_as("alice")).get_json()[
        "next_page_token"
    ]
    body, _, tag = token.partition(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    other = json.loads(raw) | {"j": "alice-00"}  # skip ahead to another job
    forged = base64.urlsafe_b64encode(json.dumps(other).encode()).decode().rstrip("=")
    response = cloud.client.get(f"/jobs?page_token={forged}.{tag}", headers=_as("alice"))
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "page_token"
    # The token as made still continues the list.
    assert cloud.client.get(f"/jobs?page_token={token}", headers=_as("alice")).status_code == 200


def test_every_api_instance_takes_the_tokens_of_the_others(
    cloud: Cloud,
    seeded: dict[str, list[str]],
    settings: Any,  # noqa: F811
    standin: Any,  # noqa: F811
    blob_store: Any,
    signer: Any,
    publisher: Any,
) -> None:
    from comfyburst.services._page_key import KEY_OBJECT

    first = cloud.client.get("/jobs?page_size=5", headers=_as("alice")).get_json()
    key = blob_store.read(settings.jobs_bucket, KEY_OBJECT)
    assert key is not None and len(key) == 32  # made once, in the jobs bucket
    other = Cloud(settings, standin, blob_store, signer, publisher)  # a second instance
    response = other.client.get(
        f"/jobs?page_size=5&page_token={first['next_page_token']}", headers=_as("alice")
    )
    assert response.status_code == 200, response.get_json()
    assert [j["job_id"] for j in response.get_json()["jobs"]] == [
        f"alice-{i:02d}" for i in range(6, 1, -1)
    ]
    assert blob_store.read(settings.jobs_bucket, KEY_OBJECT) == key


# --- waiting ---------------------------------------------------------------------------------


def _created(cloud: Cloud, state: JobState = JobState.RUNNING) -> str:
    job = _job("waited", None, datetime.now(UTC), state)
    cloud.store.create_job(job)
    return job.job_id


def _waiting(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set once the request's wait has begun: its baseline read is done, so a change made
    after it is one the wait must see (a change before it would be the baseline itself)."""
    began = threading.Event()
    views = cloud.deps.views
    wait_for = views.wait_for

    def signalled(*args: Any, **kwargs: Any) -> Any:
        began.set()
        return wait_for(*args, **kwargs)

    monkeypatch.setattr(views, "wait_for", signalled)
    return began


def test_wait_answers_when_progress_changes(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = _created(cloud)
    progress = Progress(node="3", value=4, max=10, fraction=0.4)
    waiting = _waiting(cloud, monkeypatch)

    def later() -> None:
        assert waiting.wait(30)
        cloud.store.patch_job(job_id, {"progress": progress.model_dump()})

    threading.Thread(target=later, daemon=True).start()
    began = time.monotonic()
    response = cloud.client.get(f"/jobs/{job_id}?wait_s=60")
    waited_s = time.monotonic() - began
    assert response.status_code == 200
    assert response.get_json()["progress"]["value"] == 4
    # It answered because of the change, not because 60 s ran out.
    assert waited_s < 30


def test_wait_answers_when_state_changes(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = _created(cloud, JobState.QUEUED)
    waiting = _waiting(cloud, monkeypatch)

    def later() -> None:
        assert waiting.wait(30)
        cloud.store.update_job(
            job_id, lambda job: job.model_copy(update={"state": JobState.RUNNING})
        )

    threading.Thread(target=later, daemon=True).start()
    began = time.monotonic()
    response = cloud.client.get(f"/jobs/{job_id}?wait_s=60")
    assert response.get_json()["state"] == "running"
    assert time.monotonic() - began < 30  # the change answered it, not the 60 s


def test_wait_without_a_change_answers_the_job_as_it_is_after_wait_s(cloud: Cloud) -> None:
    job_id = _created(cloud)
    began = time.monotonic()
    response = cloud.client.get(f"/jobs/{job_id}?wait_s=0.5")
    assert response.status_code == 200
    assert response.get_json()["state"] == "running"
    assert time.monotonic() - began >= 0.5


def test_wait_on_a_terminal_job_answers_at_once(cloud: Cloud) -> None:
    job_id = _created(cloud, JobState.SUCCEEDED)
    began = time.monotonic()
    response = cloud.client.get(f"/jobs/{job_id}?wait_s=60")
    assert response.get_json()["state"] == "succeeded"
    assert time.monotonic() - began < 30


@pytest.mark.parametrize("wait_s", ["61", "-1", "soon", "nan", "inf"])
def test_wait_s_out_of_range_is_refused(cloud: Cloud, wait_s: str) -> None:
    job_id = _created(cloud)
    response = cloud.client.get(f"/jobs/{job_id}?wait_s={wait_s}")
    assert response.status_code == 400
    assert response.get_json()["error"]["field"] == "wait_s"


def test_wait_on_an_unknown_job_is_404(cloud: Cloud) -> None:
    assert cloud.client.get("/jobs/nosuchjob?wait_s=5").status_code == 404


def test_the_client_waits_on_the_server_not_in_a_poll_loop(cloud: Cloud) -> None:
    from werkzeug.serving import make_server

    from comfyburst.client import ApiClient, ClientSettings

    seen: list[str] = []
    app = cloud.client.application

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ.get("QUERY_STRING", ""))
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, counting, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    job_id = _created(cloud)

    def advance() -> None:
        for value in (1, 2, 3):
            time.sleep(0.4)
            cloud.store.patch_job(job_id, {"progress": {"node": "1", "value": value, "max": 3}})
        time.sleep(0.4)
        cloud.store.update_job(
            job_id, lambda job: job.model_copy(update={"state": JobState.SUCCEEDED})
        )

    threading.Thread(target=advance, daemon=True).start()
    client = ApiClient(ClientSettings(api_url=f"http://127.0.0.1:{server.port}", auth="none"))
    updates: list[int] = []
    try:
        done = client.wait(job_id, timeout_s=60, on_update=lambda j: updates.append(1))
    finally:
        server.shutdown()
    assert done["state"] == "succeeded"
    # One call to start, then one answered per change: no poll in between.
    assert all("wait_s=" in query for query in seen)
    assert len(seen) <= 6, seen
    assert len(updates) == len(seen)


def test_waiting_on_another_callers_job_answers_like_an_unknown_job(cloud: Cloud) -> None:
    cloud.store.create_job(_job("alices", "alice@example.com", datetime.now(UTC), JobState.RUNNING))
    began = time.monotonic()
    response = cloud.client.get("/jobs/alices?wait_s=30", headers=_as("bob@example.com"))
    assert response.status_code == 404
    assert time.monotonic() - began < 15  # refused before any wait
    mine = cloud.client.get("/jobs/alices?wait_s=0", headers=_as("alice@example.com"))
    assert mine.status_code == 200
