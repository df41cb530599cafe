"""A draining worker learns of its class's next job by a listen on the queue (Firestore
`on_snapshot`, adapters/firestore_queue_watch.py), on the Firestore emulator: a job queued after
the agent went idle is claimed without waiting for a poll (polls set 30 s apart, a deadline of
a few seconds), and a listen that breaks leaves the agent polling (issue #26, item 6)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud import firestore

from comfyburst import wiring
from comfyburst.adapters.clock import SystemClock
from comfyburst.adapters.firestore_queue_watch import FirestoreQueueWatch
from comfyburst.schema import VmRef
from comfyburst.states import JobState
from comfyburst_worker.__main__ import build_services
from comfyburst_worker.agent import Agent
from tests._completion_helpers import make_job
from tests._poll import poll_until
from tests._worker_support import local_config, local_settings
from tests.fakes import InMemoryBlobStore

pytestmark = pytest.mark.emulator

VM = VmRef(name="cb-listen-0", zone="zone-a")
LONG_S = 30.0  # every poll interval: a poll could not claim within the deadline below
DEADLINE_S = 8.0


class _Looks:
    """The store, with an event set each time the agent has listed the queue."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.looked = threading.Event()

    def list_jobs(self, *args: Any, **kw: Any) -> Any:
        found = self.inner.list_jobs(*args, **kw)
        self.looked.set()
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def names(function_settings: Any) -> Any:
    suffix = uuid.uuid4().hex[:8]
    return function_settings.model_copy(
        update={
            "jobs_collection": f"listen_jobs_{suffix}",
            "vms_collection": f"listen_vms_{suffix}",
        }
    )


def _watch(names: Any) -> FirestoreQueueWatch:
    client = firestore.Client(project=names.project_id)
    watch = FirestoreQueueWatch(client, names.jobs_collection, "default").start()
    poll_until(lambda: watch.queued == 0, "the listen's first snapshot", timeout_s=30)
    return watch


def _draining(store: Any, tmp_path: Path, watch: Any, poll_s: float) -> Callable[[], Any]:
    """An idle agent draining in a thread (polls `poll_s` apart without a live listen, 30 s
    with one); returns a getter of what its drain claimed, once it has looked at the queue."""
    settings = local_settings(
        "http://127.0.0.1:9",
        tmp_path / "models",
        drain_poll_interval_s=poll_s,
        drain_listen_poll_interval_s=LONG_S,
    )
    config = local_config(drain_grace_s=4 * LONG_S)
    services = build_services(settings, config, VM, store, InMemoryBlobStore(), SystemClock())
    agent = Agent(services, VM, queue=watch)
    claimed: list[Any] = []
    thread = threading.Thread(target=lambda: claimed.append(agent._drain()[0]), daemon=True)
    thread.start()
    assert store.looked.wait(DEADLINE_S), "the agent never looked at the queue"

    def result() -> Any:
        thread.join(DEADLINE_S)
        return claimed[0] if claimed else None

    return result


def _queue_one(store: Any) -> str:
    job_id = uuid.uuid4().hex
    at = SystemClock().now() - timedelta(seconds=1)  # the claim's deadline check passes
    store.create_job(make_job(job_id, at, vm=None).model_copy(update={"gpu_class": "default"}))
    return job_id


def test_a_job_queued_while_idle_is_claimed_without_waiting_for_a_poll(names, tmp_path):
    store = _Looks(wiring.job_store(names))
    watch = _watch(names)
    try:
        claimed = _draining(store, tmp_path, watch, poll_s=LONG_S)
        job_id = _queue_one(store)
        job = claimed()
        assert job is not None, f"not claimed within {DEADLINE_S} s (polls are {LONG_S} s apart)"
        assert job.job_id == job_id
        stored = store.get_job(job_id)
        assert stored.state is JobState.RUNNING and stored.vm.name == VM.name
    finally:
        watch.stop()


def test_a_broken_listen_leaves_the_agent_polling(names, tmp_path):
    store = _Looks(wiring.job_store(names))
    watch = _watch(names)
    try:
        claimed = _draining(store, tmp_path, watch, poll_s=0.1)
        # The listen ends as one the client cannot recover does: no callback, not live.
        watch._watch.close()
        job_id = _queue_one(store)
        job = claimed()
        assert job is not None, f"not claimed within {DEADLINE_S} s after the listen broke"
        assert job.job_id == job_id
    finally:
        watch.stop()
