"""Hostile input on the emulators, through the app of functions/main.py: what ComfyUI accepts
stays accepted (its errors stored in a form Firestore takes), everything else is a 4xx that
writes nothing, and no answer outgrows its request."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from comfyburst.errors import Contended
from comfyburst.schema import MAX_STORED_NODE_ERRORS_BYTES
from tests._api_support import body
from tests.test_api_emulator import Cloud, cloud, settings, standin  # noqa: F401

pytestmark = pytest.mark.emulator

MIB = 1024 * 1024


def _with_side_branch(value: Any, node_id: str = "9") -> dict[str, Any]:
    """The valid workflow plus an output whose wrong combo value ComfyUI echoes back."""
    request = body()
    request["workflow"][f"{node_id}-ckpt"] = {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": value},
    }
    request["workflow"][node_id] = {
        "class_type": "PreviewImage",
        "inputs": {"images": [f"{node_id}-decode", 0]},
    }
    request["workflow"][f"{node_id}-decode"] = {
        "class_type": "VAEDecode",
        "inputs": {"samples": [f"{node_id}-empty", 0], "vae": [f"{node_id}-ckpt", 2]},
    }
    request["workflow"][f"{node_id}-empty"] = {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1},
    }
    return request


def _nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"k": value}
    return value


ACCEPTED = {
    "array_in_array": _with_side_branch({"v": [[1, 2], [3, [4]]]}),
    "int_beyond_64_bits": _with_side_branch({"v": 2**70}),
    "firestore_reserved_key": _with_side_branch({"__name__": 1}, node_id="__x__"),
    "deeper_than_firestore": _with_side_branch(_nested(30)),
    "echo_over_1_mib": _with_side_branch({"v": "y" * (MIB + 10)}),
}


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_a_partly_valid_workflow_stays_accepted(cloud: Cloud, case: str) -> None:  # noqa: F811
    response = cloud.submit(ACCEPTED[case])
    assert response.status_code == 202, response.get_data(as_text=True)[:500]
    job_id = response.get_json()["job_id"]
    stored = cloud.store.get_job(job_id)
    assert stored.accepted_outputs == ["2"]
    assert len(stored.preflight_node_errors_json or "") <= MAX_STORED_NODE_ERRORS_BYTES
    view = cloud.client.get(f"/jobs/{job_id}").get_json()
    failed = [k for k in view["preflight_node_errors"] if k.endswith("-ckpt")]
    assert failed and view["preflight_node_errors"][failed[0]]["class_type"] == (
        "CheckpointLoaderSimple"
    )


REFUSED = {
    "lone_surrogate": (
        json.dumps(body()).replace('"cb"', '"\\ud800cb"').encode(),
        "workflow.2.inputs.filename_prefix",
    ),
    "nested_255_deep": (json.dumps(_with_side_branch(_nested(255))).encode(), None),
    "1e400": (json.dumps(body()).replace('"color": 0', '"color": 1e400').encode(), None),
    "NaN": (json.dumps(body()).replace('"color": 0', '"color": NaN').encode(), None),
    "Infinity": (json.dumps(body()).replace('"color": 0', '"color": -Infinity').encode(), None),
    "raw_surrogate_bytes": (
        json.dumps(body()).replace('"cb"', '"cb\udc80"', 1).encode("utf-8", "surrogatepass"),
        None,
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_json_nothing_can_store_is_a_400_that_writes_nothing(cloud: Cloud, case: str) -> None:  # noqa: F811
    data, field = REFUSED[case]
    response = cloud.submit(data, **{"Idempotency-Key": f"k-{case}"})
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    error = response.get_json()["error"]
    assert error["code"] == "invalid_json"
    if field is not None:
        assert error["field"] == field
    assert cloud.nothing_written()
    assert all(vm["status"] == "TERMINATED" for vm in cloud.standin.instances())


def _amplifying_workflow(branches: int) -> dict[str, Any]:
    """Each branch is ~150 bytes; ComfyUI's errors for it list every sampler (~3 KB)."""
    request = body()
    for i in range(branches):
        request["workflow"][f"k{i}"] = {
            "class_type": "KSampler",
            "inputs": {"sampler_name": "bad", "scheduler": "bad"},
        }
        request["workflow"][f"s{i}"] = {
            "class_type": "SaveLatent",
            "inputs": {"samples": [f"k{i}", 0], "filename_prefix": "x"},
        }
    return request


def test_validate_and_submit_answers_stay_bounded(cloud: Cloud) -> None:  # noqa: F811
    data = json.dumps(_amplifying_workflow(900)).encode()
    assert len(data) > 150_000
    verdict = cloud.client.post("/jobs:validate", data=data, content_type="application/json")
    assert verdict.status_code == 200
    assert len(verdict.data) <= 2 * len(data)
    answer = verdict.get_json()
    assert answer["valid"] is True and answer["node_errors_omitted"] > 0
    assert answer["outputs_to_execute"] == ["2"]
    accepted = cloud.submit(data)
    assert accepted.status_code == 202 and len(accepted.data) <= 2 * len(data)
    rejected = json.loads(data)
    del rejected["workflow"]["2"]  # no valid output left: 422 with the errors, bounded
    refused = cloud.submit(rejected)
    assert refused.status_code == 422 and len(refused.data) <= 2 * len(data)
    assert refused.get_json()["node_errors_omitted"] > 0


class _CountingStream(io.RawIOBase):
    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # Ends early (4 MiB) so that a regression fails quickly instead of reading 10 GiB.
        size = min(len(buffer), 65536, 4 * MIB - self.read_bytes)
        buffer[:size] = b" " * size
        self.read_bytes += size
        return size


def test_a_declared_oversized_body_is_refused_before_it_is_read(cloud: Cloud) -> None:  # noqa: F811
    """functions-framework reads a whole body before answering unless the answer streams."""
    from werkzeug.test import EnvironBuilder, run_wsgi_app

    stream = _CountingStream()
    environ = EnvironBuilder(path="/jobs", method="POST", content_type="application/json")
    wsgi_environ = environ.get_environ()
    wsgi_environ["wsgi.input"] = stream
    wsgi_environ["CONTENT_LENGTH"] = str(10 * 1024 * MIB)
    app_iter, status, headers = run_wsgi_app(cloud.client.application, wsgi_environ)
    answer = b"".join(app_iter)
    assert status.startswith("413")
    assert json.loads(answer)["error"]["code"] == "payload_too_large"
    assert headers["Connection"] == "close"
    assert stream.read_bytes == 0
    assert cloud.nothing_written()


def test_a_contended_cancel_answers_409_with_retry_after(cloud: Cloud) -> None:  # noqa: F811
    job_id = cloud.submit(body()).get_json()["job_id"]

    def contended(job_id: str, mutate: Any) -> Any:
        raise Contended(f"job {job_id} stayed contended", retry_after_s=2)

    cloud.store.update_job = contended  # type: ignore[method-assign]
    response = cloud.client.post(f"/jobs/{job_id}:cancel")
    assert response.status_code == 409
    assert response.headers["Retry-After"] == "2"
    assert response.get_json()["error"]["code"] == "contended"


def test_cancels_racing_other_writers_never_answer_a_bare_5xx(cloud: Cloud) -> None:  # noqa: F811
    """Real contention on the emulator, with a store that barely retries: a cancel racing
    progress writers answers 202, or 409 `contended` with Retry-After; never a 5xx."""
    import contextlib
    import threading
    from collections import Counter

    from comfyburst import wiring
    from comfyburst.adapters.firestore_store import FirestoreJobStore
    from comfyburst.schema import Progress

    job_id = cloud.submit(body()).get_json()["job_id"]
    impatient = FirestoreJobStore(
        wiring.firestore_client(cloud.settings),
        cloud.settings,
        transaction_attempts=1,
        contended_runs=1,
    )
    cloud.deps.store = impatient
    stop = threading.Event()

    def write_progress(worker: int) -> None:
        value = 0
        while not stop.is_set():
            value += 1
            update = {"progress": Progress(node=str(worker), value=value, max=10**6)}
            with contextlib.suppress(Contended):
                impatient.update_job(job_id, lambda j, u=update: j.model_copy(update=u))

    writers = [threading.Thread(target=write_progress, args=(i,)) for i in range(4)]
    for thread in writers:
        thread.start()
    answers = []
    try:
        for _ in range(8):
            response = cloud.client.post(f"/jobs/{job_id}:cancel")
            answers.append((response.status_code, response.headers.get("Retry-After")))
    finally:
        stop.set()
        for thread in writers:
            thread.join(timeout=30)
    print("cancel answers under contention:", Counter(status for status, _ in answers))
    assert all(status in (202, 409) for status, _ in answers), answers
    assert all(retry == "2" for status, retry in answers if status == 409), answers
