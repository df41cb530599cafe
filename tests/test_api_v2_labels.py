"""Comfy API v2 job `metadata` labels and the `comfyburst` extension object, through the app
of functions/main.py on the emulators: labels sent by the pinned comfy-sdk's transport are
stored, read back and filtered in the list; the extension's fields land on the job through
our own request's rules; every refusal answers the v2 envelope and writes nothing. comfy-sdk's
own client (over a loopback port) labels, lists and reads a preview from the event stream."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from comfy_low.errors import ApiError
from comfy_low.transport import ComfyLow
from comfy_sdk import Comfy, Preview, StatusChange
from comfy_sdk.exceptions import to_sdk_error
from comfy_sdk.jobs import Job as SdkJob
from comfy_sdk.jobs import JobSummary

from comfyburst.api._v2_events import OPEN_STREAMS
from comfyburst.domain.jobs import transition
from comfyburst.domain.previews import preview_object
from comfyburst.states import JobState
from tests._api_support import ckpt_body
from tests._poll import poll_until
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)
from tests.test_api_v2 import (  # noqa: F401  (fixture)
    KEYS,
    _as,
    _error,
    _png,
    _submit,
    _workflow,
    cloud,
)
from tests.test_api_v2_assets import lows  # noqa: F401  (fixture)

pytestmark = pytest.mark.emulator


def _sdk_code(call: Any) -> str:
    with pytest.raises(ApiError) as raised:
        call()
    return str(to_sdk_error(raised.value).code)


def test_labels_are_kept_read_back_and_filter_the_list(
    cloud: Cloud,  # noqa: F811
    lows: dict[str, ComfyLow],  # noqa: F811
) -> None:
    ana = lows["ana"]

    def submitted(**labels: str) -> Any:
        job = ana.post_jobs(_workflow(), metadata=labels)
        ana.cancel_job(job.id)  # the fixture queues at most 2 jobs per caller
        return job

    acme = submitted(client="acme", **{"run.id": "7"})
    other = submitted(client="zeta", **{"run.id": "7"})
    plain = submitted()
    assert SdkJob(ana, acme).metadata == {"client": "acme", "run.id": "7"}
    assert SdkJob(ana, ana.get_job(plain.id)).metadata == {}
    assert cloud.store.get_job(acme.id).label_pairs == ["client=acme", "run.id=7"]

    def listed(**filters: str) -> list[str]:
        page = ana.list_jobs(metadata=filters)
        return [JobSummary._from_item(item).id for item in page["jobs"]]

    assert listed(client="acme") == [acme.id]
    assert listed(**{"run.id": "7"}) == [other.id, acme.id]
    assert listed(**{"run.id": "7", "client": "zeta"}) == [other.id]  # a second pair in memory
    assert listed(client="nobody") == []
    item = ana.list_jobs(metadata={"client": "acme"})["jobs"][0]
    assert JobSummary._from_item(item).metadata == {"client": "acme", "run.id": "7"}
    # Paging keeps the filter; a cursor of a filtered list is refused with another filter.
    first = ana.list_jobs(metadata={"run.id": "7"}, limit=1)
    second = ana.list_jobs(metadata={"run.id": "7"}, limit=1, cursor=first["next_cursor"])
    assert [first["jobs"][0]["id"], second["jobs"][0]["id"]] == [other.id, acme.id]
    assert "next_cursor" not in second
    assert _sdk_code(lambda: ana.list_jobs(cursor=first["next_cursor"])) == "invalid_cursor"
    # Another caller's labels are not another caller's list.
    assert lows["bo"].list_jobs(metadata={"client": "acme"})["jobs"] == []


@pytest.mark.parametrize(
    ("metadata", "named"),
    [
        ({"bad key": "x"}, "bad key"),
        ({"k" * 41: "x"}, "k" * 40),
        ({"ok": "a\nb"}, "ok"),
        ({"ok": "\u202e"}, "ok"),
        ({"ok": "é" * 129}, "ok"),  # 258 bytes in UTF-8
        ({f"k{n}": "v" for n in range(17)}, "17"),
    ],
)
def test_bad_labels_are_metadata_invalid_naming_the_key_and_write_nothing(
    cloud: Cloud,  # noqa: F811
    lows: dict[str, ComfyLow],  # noqa: F811
    metadata: dict[str, str],
    named: str,
) -> None:
    with pytest.raises(ApiError) as raised:
        lows["ana"].post_jobs(_workflow(), idempotency_key="labels", metadata=metadata)
    error = to_sdk_error(raised.value)
    assert (error.code, raised.value.http_status) == ("metadata_invalid", 422)
    assert named in str(error)
    assert cloud.nothing_written()
    # The refused submit did not claim its key.
    assert lows["ana"].post_jobs(_workflow(), idempotency_key="labels").status.value == "queued"


def test_a_non_object_metadata_is_refused(cloud: Cloud) -> None:  # noqa: F811
    response = _submit(cloud, {"workflow": _workflow(), "metadata": ["a"]}, **_as("ana"))
    assert _error(response, 422, "metadata_invalid")["details"]["field"] == "metadata"
    assert cloud.nothing_written()


@pytest.mark.parametrize(
    "query",
    [
        "metadata[a]=1&metadata[b]=2&metadata[c]=3&metadata[d]=4",
        "metadata[a]=x%0Ay",
        "metadata[bad%20key]=1",
        "metadata=1",
        "metadata[a]=1&metadata[a]=2",
    ],
)
def test_bad_list_filters_are_invalid_metadata_filter(cloud: Cloud, query: str) -> None:  # noqa: F811
    response = cloud.client.get(f"/api/v2/jobs?{query}", headers=_as("ana"))
    _error(response, 422, "invalid_metadata_filter")


def test_extra_data_with_keys_is_refused_and_writes_nothing(cloud: Cloud) -> None:  # noqa: F811
    body = {"workflow": _workflow(), "extra_data": {"api_key_comfy_org": "comfyui-x"}}
    assert _error(_submit(cloud, body, **_as("ana")), 422, "invalid_request")["details"] == {
        "field": "extra_data"
    }
    assert cloud.nothing_written()


def test_the_extension_sets_class_timeout_webhook_and_models(cloud: Cloud) -> None:  # noqa: F811
    ckpt = ckpt_body()
    del ckpt["workflow"]["2"]  # its one output then needs the checkpoint
    # Without the checkpoint the graph fails pre-flight; the extension's models bring it.
    bare = _submit(cloud, {"workflow": ckpt["workflow"]}, **_as("ana"))
    _error(bare, 422, "invalid_workflow")
    extension = {
        "models": ckpt["models"],
        "gpu_class": "t4",
        "timeout_s": 600,
        "webhook_url": "https://hooks.example.com/comfyburst",
    }
    body = {"workflow": ckpt["workflow"], "comfyburst": extension}
    created = _submit(cloud, body, **_as("ana"))
    assert created.status_code == 201, created.get_json()
    job = cloud.store.get_job(created.get_json()["id"])
    assert job.gpu_class == "t4" and job.options.timeout_s == 600
    assert job.deadline_at - job.created_at == timedelta(seconds=600)
    assert job.webhook_url == extension["webhook_url"]
    assert job.request.models == ["checkpoints/my.safetensors"]


@pytest.mark.parametrize(
    ("extension", "field"),
    [
        ({"timeout_s": 5}, "comfyburst.timeout_s"),
        ({"gpu_class": "Not A Class"}, "comfyburst.gpu_class"),
        ({"environment": "env-nope"}, "comfyburst.environment"),
        ({"webhook_url": "http://hooks.example.com/x"}, "comfyburst.webhook_url"),
        ({"models": [{"kind": "checkpoints", "filename": "../x", "url": "https://a/b"}]},
         "comfyburst.models.0.filename"),
        ({"output_format": "png"}, "comfyburst.output_format"),
        ("fast", "comfyburst"),
    ],
)  # fmt: skip
def test_a_bad_extension_field_is_named_as_written_and_writes_nothing(
    cloud: Cloud,  # noqa: F811
    extension: Any,
    field: str,
) -> None:
    response = _submit(cloud, {"workflow": _workflow(), "comfyburst": extension}, **_as("ana"))
    # Our request's rules answer 400 as for /jobs; a field the extension lacks, 422.
    unknown = field in ("comfyburst", "comfyburst.output_format")
    error = _error(response, 422 if unknown else 400, "invalid_request")
    assert error["details"]["field"] == field, error
    assert cloud.nothing_written()


@pytest.fixture
def served(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Comfy]]:  # noqa: F811
    """The app on a loopback port and comfy-sdk's own client per caller, pointed at it."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, cloud.client.application, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("COMFY_BASE_URL", f"http://127.0.0.1:{server.port}")
    monkeypatch.delenv("COMFY_API_KEY", raising=False)
    made = {who: Comfy(api_key=key, timeout=30.0) for who, key in KEYS.items()}
    try:
        yield made
    finally:
        for client in made.values():
            client.close()
        server.shutdown()


def test_the_sdk_client_labels_lists_and_streams_previews(
    cloud: Cloud,  # noqa: F811
    served: dict[str, Comfy],
) -> None:
    ana = served["ana"]
    labelled = ana.submit(ana.workflows.from_json(_workflow()), metadata={"client": "acme"})
    plain = ana.submit(ana.workflows.from_json(_workflow()))
    assert labelled.metadata == {"client": "acme"} and plain.metadata == {}
    assert [s.id for s in ana.list_jobs(metadata={"client": "acme"})] == [labelled.id]
    assert {s.id for s in ana.list_jobs()} == {labelled.id, plain.id}
    assert list(served["bo"].list_jobs(metadata={"client": "acme"})) == []
    # A running job's stream carries its latest preview, as the SDK types it.
    frame = _png((9, 99, 199))
    cloud.blobs.write(
        cloud.settings.outputs_bucket, preview_object(labelled.id), frame, content_type="image/png"
    )
    cloud.store.update_job(labelled.id, lambda j: transition(j, JobState.RUNNING, j.created_at))
    events = labelled.events()
    assert next(events) == StatusChange(status="running", queue_position=None)
    kinds = [next(events), next(events)]
    previews = [e for e in kinds if isinstance(e, Preview)]
    assert len(previews) == 1 and previews[0].data == frame
    assert previews[0].to_pil().getpixel((0, 0)) == (9, 99, 199)
    events.close()
    # The server's side of the stream ends at the terminal status and gives its slot back
    # (slots are per process: a leftover would count against later tests' streams).
    cloud.store.update_job(labelled.id, lambda j: transition(j, JobState.CANCELLED, j.created_at))
    poll_until(lambda: OPEN_STREAMS.open_count("ana") == 0, "the stream's slot back", timeout_s=30)
