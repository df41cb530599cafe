"""Result messages: built once with the terminal state, published once, re-sent unchanged."""

from __future__ import annotations

import hashlib

import pytest

from comfyburst.schema import OutputFile, ResultMessage
from comfyburst.services.results import (
    build_result,
    encode_result,
    finish,
    publish_result,
    split_gs_uri,
)
from comfyburst.states import JobState
from tests._completion_helpers import make_job
from tests.fakes import FakeSigner, FixedClock, InMemoryJobStore, InMemoryPublisher


def _output(name: str, uri: str | None) -> OutputFile:
    return OutputFile(
        name=name, size_bytes=3, sha256="0" * 64, content_type="image/png", gs_uri=uri
    )


def test_build_result_signs_outputs_with_the_jobs_ttl():
    clock = FixedClock()
    job = make_job("j1", clock.now(), JobState.RUNNING)
    job = finish(
        job,
        JobState.SUCCEEDED,
        clock.advance(10),
        None,
        outputs=[_output("a.png", "gs://out/jobs/j1/outputs/a.png"), _output("b", None)],
    )
    message = build_result(job, FakeSigner())
    assert message.status is JobState.SUCCEEDED
    assert [o.name for o in message.outputs] == ["a.png"]  # no gs_uri: nothing to fetch
    assert (
        message.outputs[0].signed_url == "https://signed.invalid/out/jobs/j1/outputs/a.png?ttl=3600"
    )
    assert message.timings.run_s == 10.0 and message.attributes() == {
        "job_id": "j1",
        "status": "succeeded",
    }


def test_finish_stores_the_message_and_its_hash():
    clock = FixedClock()
    job = finish(make_job("j1", clock.now()), JobState.CANCELLED, clock.now())
    assert job.result is not None and job.result.status is JobState.CANCELLED
    assert job.result_sha256 == hashlib.sha256(encode_result(job.result)).hexdigest()
    with pytest.raises(ValueError, match="terminal"):
        finish(make_job("j2", clock.now()), JobState.STARTING, clock.now())


def test_publish_result_once_then_marked():
    clock = FixedClock()
    store, publisher = InMemoryJobStore(), InMemoryPublisher()
    job = finish(make_job("j1", clock.now()), JobState.CANCELLED, clock.now())
    store.create_job(job)
    published = publish_result(store, publisher, job, clock.now())
    assert published.result_published_at == clock.now()
    assert store.get_job("j1").result_published_at == clock.now()
    publish_result(store, publisher, store.get_job("j1"), clock.now())
    assert len(publisher.messages) == 1
    body, attributes = publisher.messages[0]
    assert ResultMessage.model_validate_json(body) == job.result
    assert attributes == {"job_id": "j1", "status": "cancelled"}


def test_publish_result_without_stored_message_builds_and_stores_one():
    clock = FixedClock()
    store, publisher = InMemoryJobStore(), InMemoryPublisher()
    job = make_job("j1", clock.now(), JobState.TIMED_OUT)
    store.create_job(job)
    publish_result(store, publisher, job, clock.now())
    stored = store.get_job("j1")
    assert stored.result is not None and stored.result.status is JobState.TIMED_OUT
    assert encode_result(stored.result) == publisher.messages[0][0]


def test_publish_result_refuses_live_jobs_and_keeps_failures_unmarked():
    clock = FixedClock()
    store, publisher = InMemoryJobStore(), InMemoryPublisher()
    with pytest.raises(ValueError):
        publish_result(store, publisher, make_job("j0", clock.now(), JobState.RUNNING), clock.now())
    job = finish(make_job("j1", clock.now()), JobState.CANCELLED, clock.now())
    store.create_job(job)
    publisher.fail_next = 1
    with pytest.raises(RuntimeError):
        publish_result(store, publisher, job, clock.now())
    assert store.get_job("j1").result_published_at is None


def test_split_gs_uri():
    assert split_gs_uri("gs://b/a/b.png") == ("b", "a/b.png")
    for bad in ("https://b/x", "gs://b", "gs:///x"):
        with pytest.raises(ValueError):
            split_gs_uri(bad)
