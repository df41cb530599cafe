"""The worker's done-flag write: one flag per attempt, and an older attempt's flag never blocks a
retry (in-memory blob store; no ComfyUI is contacted)."""

from __future__ import annotations

from comfyburst.schema import DoneManifest, VmRef
from tests._completion_helpers import manifest
from tests._worker_support import local_config, local_settings, make_agent
from tests.fakes import FixedClock, InMemoryBlobStore, InMemoryJobStore

FLAG = ("signals", "jobs/j1/done.json")
NOW = FixedClock().now()


def _agent(tmp_path, blobs):
    settings = local_settings("http://127.0.0.1:9", tmp_path / "models")
    vm = VmRef(name="gpu-2", zone="zone-a")
    return make_agent(settings, local_config(), InMemoryJobStore(), blobs, vm)


def _put(blobs, attempt: int, vm: str = "gpu-1") -> int:
    body = manifest("j1", NOW, attempt=attempt, vm=vm).model_dump_json().encode()
    return blobs.write(*FLAG, body, "application/json", if_generation_match=0)


def _stored(blobs) -> DoneManifest:
    return DoneManifest.model_validate_json(blobs.read(*FLAG))


def test_first_flag_is_written_when_absent(tmp_path):
    blobs = InMemoryBlobStore()
    _agent(tmp_path, blobs)._write_done(manifest("j1", NOW, vm="gpu-2"))
    assert _stored(blobs).vm == "gpu-2"


def test_flag_of_an_older_attempt_is_replaced(tmp_path):
    blobs = InMemoryBlobStore()
    old_generation = _put(blobs, attempt=1)
    _agent(tmp_path, blobs)._write_done(manifest("j1", NOW, attempt=2, vm="gpu-2"))
    stored = _stored(blobs)
    assert (stored.attempt, stored.vm) == (2, "gpu-2")
    assert blobs.generation(*FLAG) > old_generation  # a new generation: the trigger fires again


def test_first_flag_of_the_same_attempt_stands(tmp_path):
    blobs = InMemoryBlobStore()
    generation = _put(blobs, attempt=2, vm="gpu-1")
    _agent(tmp_path, blobs)._write_done(manifest("j1", NOW, attempt=2, vm="gpu-2"))
    assert _stored(blobs).vm == "gpu-1" and blobs.generation(*FLAG) == generation


def test_flag_of_a_newer_attempt_stands(tmp_path):
    blobs = InMemoryBlobStore()
    _put(blobs, attempt=3)
    _agent(tmp_path, blobs)._write_done(manifest("j1", NOW, attempt=2, vm="gpu-2"))
    assert _stored(blobs).attempt == 3


def test_replacing_is_conditional_on_the_generation_read(tmp_path):
    """Another writer of our attempt lands between our read and our overwrite: its flag stands
    (exactly one writer wins each generation)."""
    blobs = InMemoryBlobStore()
    _put(blobs, attempt=1)
    real_read = blobs.read
    raced = []

    def read_then_race(bucket, name):
        data = real_read(bucket, name)
        if not raced:
            raced.append(True)
            body = manifest("j1", NOW, attempt=2, vm="gpu-9").model_dump_json().encode()
            blobs.write(bucket, name, body, "application/json")  # unconditional: the rival
        return data

    blobs.read = read_then_race
    _agent(tmp_path, blobs)._write_done(manifest("j1", NOW, attempt=2, vm="gpu-2"))
    assert _stored(blobs).vm == "gpu-9"
