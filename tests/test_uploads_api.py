"""Model uploads on the emulators: POST /uploads through the app of functions/main.py, the
bytes sent by the client into fake-gcs-server's resumable session, jobs naming the upload, and
the worker's model store reading it back. Two uploaders (ana, bo), one caller not allowed (cy)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from comfyburst.adapters.gcs_uploads import GcsModelUploads
from comfyburst.client import RESUMABLE_CHUNK_MULTIPLE, ApiClient, ClientSettings
from comfyburst.domain.uploads import object_name
from comfyburst.schema import ModelSpec
from tests._api_support import ckpt_body
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)

pytestmark = pytest.mark.emulator

KEYS = {"ana": "key-ana-1", "bo": "key-bo-2", "cy": "key-cy-3"}


def _as(name: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[name]}


@pytest.fixture
def cloud(
    settings: Any,  # noqa: F811
    standin: Any,  # noqa: F811
    blob_store: Any,
    signer: Any,
    publisher: Any,
    storage_client: Any,
) -> Cloud:
    assert settings.models_bucket, "the local cloud has a models bucket"
    keyed = settings.model_copy(
        update={
            "auth_mode": "api_key",
            "api_key_hashes": [
                f"{name}={hashlib.sha256(key.encode()).hexdigest()}" for name, key in KEYS.items()
            ],
            "model_upload_principals": ["key:ana", "key:bo"],
        }
    )
    standin.reset()
    made = Cloud(keyed, standin, blob_store, signer, publisher)
    made.deps.uploads = GcsModelUploads(storage_client)
    return made


def _start(cloud: Cloud, who: str, sha256: str, size: int) -> Any:
    return cloud.client.post(
        "/uploads",
        data=json.dumps({"sha256": sha256, "size_bytes": size}),
        headers=_as(who),
        content_type="application/json",
    )


def _sender() -> ApiClient:
    # Only send_file is used: it talks to the session URL, never to this API URL.
    return ApiClient(ClientSettings(api_url="http://127.0.0.1:9", auth="none"))


def _upload(cloud: Cloud, who: str, path: Path) -> dict[str, Any]:
    """The client's whole flow: hash, ask, send when asked to."""
    data = path.read_bytes()
    answer = _start(cloud, who, hashlib.sha256(data).hexdigest(), len(data))
    assert answer.status_code == 200, answer.get_json()
    body: dict[str, Any] = answer.get_json()
    if not body["exists"]:
        seen: list[int] = []
        _sender().send_file(
            body["session_url"],
            str(path),
            len(data),
            on_progress=seen.append,
            chunk_bytes=RESUMABLE_CHUNK_MULTIPLE,
        )
        body["progress"] = seen
    return body


def _job_with(model: dict[str, Any]) -> dict[str, Any]:
    request = ckpt_body()
    request["models"] = [{"kind": "checkpoints", "filename": "my.safetensors", **model}]
    return request


def _model_of(answer: dict[str, Any]) -> dict[str, Any]:
    return {"url": answer["url"], "sha256": answer["sha256"], "size_bytes": answer["size_bytes"]}


def _stored(cloud: Cloud, url: str) -> bytes | None:
    bucket, _, name = url.removeprefix("gs://").partition("/")
    data: bytes | None = cloud.blobs.read(bucket, name)
    return data


def test_upload_once_then_the_hash_check_finds_it(cloud: Cloud, tmp_path: Path) -> None:
    path = tmp_path / "ckpt.safetensors"
    data = bytes(range(256)) * 2048 + b"tail"  # two full chunks and a short one
    path.write_bytes(data)
    first = _upload(cloud, "ana", path)
    assert first["exists"] is False
    assert first["progress"][-1] == len(data) and len(first["progress"]) == 3
    assert _stored(cloud, first["url"]) == data
    again = _upload(cloud, "ana", path)
    assert again["exists"] is True and again["session_url"] is None
    assert again["url"] == first["url"] and "progress" not in again
    response = cloud.submit(_job_with(_model_of(again)), **_as("ana"))
    assert response.status_code == 202, response.get_json()


def test_a_changed_file_is_uploaded_again(cloud: Cloud, tmp_path: Path) -> None:
    path = tmp_path / "ckpt.safetensors"
    path.write_bytes(b"a" * 1000)
    first = _upload(cloud, "ana", path)
    path.write_bytes(b"b" * 1000)
    second = _upload(cloud, "ana", path)
    assert second["exists"] is False and second["url"] != first["url"]
    assert _stored(cloud, second["url"]) == b"b" * 1000


def test_only_listed_callers_get_sessions(cloud: Cloud) -> None:
    answer = _start(cloud, "cy", "a" * 64, 10)
    assert answer.status_code == 403
    assert answer.get_json()["error"]["code"] == "forbidden"
    assert not cloud.blobs.list(cloud.settings.models_bucket, "uploads/")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"sha256": "xyz", "size_bytes": 10}, "sha256"),
        ({"sha256": "a" * 64, "size_bytes": 0}, "size_bytes"),
        ({"sha256": "a" * 64, "size_bytes": True}, "size_bytes"),
        ({"sha256": "a" * 64, "size_bytes": 10, "bucket": "x"}, "bucket"),
    ],
)
def test_bad_upload_requests_name_the_field(cloud: Cloud, payload: Any, field: str) -> None:
    answer = cloud.client.post(
        "/uploads", data=json.dumps(payload), headers=_as("ana"), content_type="application/json"
    )
    assert answer.status_code == 400
    assert answer.get_json()["error"]["field"] == field
    assert not cloud.blobs.list(cloud.settings.models_bucket, "uploads/")


def test_the_api_refuses_a_missing_upload_or_a_wrong_size_or_hash(
    cloud: Cloud, tmp_path: Path
) -> None:
    path = tmp_path / "m.bin"
    path.write_bytes(b"m" * 5000)
    good = _model_of(_upload(cloud, "ana", path))
    missing_sha = "c" * 64
    missing = {**good, "url": good["url"][:-64] + missing_sha, "sha256": missing_sha}
    cases = [
        (missing, 422, "upload_invalid", "models.0.url"),
        ({**good, "size_bytes": 4999}, 422, "upload_invalid", "models.0.size_bytes"),
        ({**good, "sha256": "d" * 64}, 422, "upload_invalid", "models.0.sha256"),
        ({k: v for k, v in good.items() if k != "size_bytes"}, 422, "upload_invalid", None),
    ]
    for model, status, code, field in cases:
        response = cloud.submit(_job_with(model), **_as("ana"))
        assert response.status_code == status, (model, response.get_json())
        error = response.get_json()["error"]
        assert error["code"] == code
        if field:
            assert error["field"] == field
    assert not cloud.jobs()


def test_another_caller_can_neither_use_nor_replace_an_upload(cloud: Cloud, tmp_path: Path) -> None:
    path = tmp_path / "private.safetensors"
    path.write_bytes(b"ana's model" * 100)
    ana = _upload(cloud, "ana", path)
    # bo naming ana's upload: refused, nothing stored.
    response = cloud.submit(_job_with(_model_of(ana)), **_as("bo"))
    assert response.status_code == 403, response.get_json()
    assert not cloud.jobs()
    # bo asking for the same hash gets a session for bo's own object, and no hint that ana
    # has the file; bo's bytes (whatever they are) never reach ana's object.
    bo = _start(cloud, "bo", ana["sha256"], ana["size_bytes"]).get_json()
    assert bo["exists"] is False and bo["url"] != ana["url"]
    other = tmp_path / "other.bin"
    other.write_bytes(b"X" * ana["size_bytes"])
    _sender().send_file(bo["session_url"], str(other), ana["size_bytes"])
    assert _stored(cloud, ana["url"]) == path.read_bytes()


def _worker_cache(cloud: Cloud, tmp_path: Path, mirror: bool = True) -> Any:
    """A worker's model store; without `mirror` it never reads the models-bucket mirror (where
    an earlier worker may have put the bytes it verified), only the object the job names."""
    from comfyburst_worker._download import HttpDownloader
    from comfyburst_worker._hosts import HostPolicy
    from comfyburst_worker.model_cache import ModelCache

    downloader = HttpDownloader(HostPolicy())  # gs:// only: no host is allowed
    bucket = cloud.settings.models_bucket
    return ModelCache(
        tmp_path / "store", downloader, cloud.blobs, bucket if mirror else None, [bucket]
    )


def test_the_worker_loads_the_uploaded_bytes_and_refuses_others(
    cloud: Cloud, tmp_path: Path
) -> None:
    path = tmp_path / "ckpt.safetensors"
    data = b"the real checkpoint" * 500
    path.write_bytes(data)
    ana = _upload(cloud, "ana", path)
    spec = ModelSpec.model_validate(
        {"kind": "checkpoints", "filename": "c.safetensors"} | _model_of(ana)
    )
    loaded = _worker_cache(cloud, tmp_path / "w1").ensure(spec)
    assert loaded.blob.read_bytes() == data
    # The object's bytes replaced behind the API's back (same size): a worker without the
    # file refuses them, so the bytes a job of ana loads never change.
    bucket, _, name = ana["url"].removeprefix("gs://").partition("/")
    cloud.blobs.write(bucket, name, b"Z" * len(data))
    from comfyburst_worker.errors import ModelFetchError

    with pytest.raises(ModelFetchError, match="sha256 mismatch"):
        # (The mirror would serve the bytes w1 verified, the right ones: not what is tested here.)
        _worker_cache(cloud, tmp_path / "w2", mirror=False).ensure(spec)


def test_a_client_lying_about_the_hash_is_refused_by_the_worker(
    cloud: Cloud, tmp_path: Path
) -> None:
    honest = b"h" * 3000
    claimed = hashlib.sha256(honest).hexdigest()
    answer = _start(cloud, "ana", claimed, len(honest)).get_json()
    liar = tmp_path / "lie.bin"
    liar.write_bytes(b"L" * len(honest))  # same size, other bytes
    _sender().send_file(answer["session_url"], str(liar), len(honest))
    spec = ModelSpec.model_validate(
        {"kind": "checkpoints", "filename": "c.safetensors"} | _model_of(answer)
    )
    from comfyburst_worker.errors import ModelFetchError

    with pytest.raises(ModelFetchError, match="sha256 mismatch"):
        _worker_cache(cloud, tmp_path / "w").ensure(spec)
    assert object_name("key:ana", claimed) in answer["url"]


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def test_an_object_of_other_bytes_is_replaced_when_the_md5_says_so(
    cloud: Cloud, tmp_path: Path
) -> None:
    honest = b"honest bytes" * 200
    sha256, md5 = hashlib.sha256(honest).hexdigest(), _md5_b64(honest)
    # The file changed while it was sent: the object has the size, not the bytes.
    first = _start(cloud, "ana", sha256, len(honest)).get_json()
    torn = tmp_path / "torn.bin"
    torn.write_bytes(b"T" * len(honest))
    _sender().send_file(first["session_url"], str(torn), len(honest))
    # Without an MD5 the size is all the API can go by; with it, the object is replaced.
    assert _start(cloud, "ana", sha256, len(honest)).get_json()["exists"] is True
    payload = {"sha256": sha256, "size_bytes": len(honest), "md5_b64": md5}
    again = cloud.client.post(
        "/uploads", data=json.dumps(payload), headers=_as("ana"), content_type="application/json"
    ).get_json()
    assert again["exists"] is False and again["session_url"]
    assert _stored(cloud, again["url"]) is None  # the torn object is gone
    good = tmp_path / "good.bin"
    good.write_bytes(honest)
    _sender().send_file(again["session_url"], str(good), len(honest))
    assert _stored(cloud, again["url"]) == honest
    found = cloud.client.post(
        "/uploads", data=json.dumps(payload), headers=_as("ana"), content_type="application/json"
    ).get_json()
    assert found["exists"] is True


def test_a_malformed_md5_is_refused(cloud: Cloud) -> None:
    payload = {"sha256": "a" * 64, "size_bytes": 10, "md5_b64": "not-base64-of-16-bytes!!"}
    answer = cloud.client.post(
        "/uploads", data=json.dumps(payload), headers=_as("ana"), content_type="application/json"
    )
    assert answer.status_code == 400 and answer.get_json()["error"]["field"] == "md5_b64"


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 4000,  # the parser gives up (RecursionError), which is not a ValueError
        b"[" * 70 + b"]" * 70,  # parses, deeper than any request may be
        b'{"sha256": NaN}',
        b"\xff\xfe",
    ],
    ids=["unclosed_4000", "nested_70", "nan", "not_utf8"],
)
def test_an_upload_body_that_is_not_json_is_a_400_invalid_json(cloud: Cloud, raw: bytes) -> None:
    # The one JSON-body rule of every route (`json_safety.parse_json_body`), as submit has it.
    answer = cloud.client.post(
        "/uploads", data=raw, headers=_as("ana"), content_type="application/json"
    )
    assert answer.status_code == 400, answer.get_data()[:200]
    assert answer.get_json()["error"]["code"] == "invalid_json"
    assert not cloud.blobs.list(cloud.settings.models_bucket, "uploads/")


def test_another_callers_upload_is_refused_under_every_other_spelling(
    cloud: Cloud, tmp_path: Path
) -> None:
    from comfyburst_worker.errors import ModelFetchError

    path = tmp_path / "private.safetensors"
    data = b"ana's private model" * 300
    path.write_bytes(data)
    ana = _upload(cloud, "ana", path)
    # ana's job ran: a worker verified the bytes and put them in the models bucket's mirror.
    ana_worker = _worker_cache(cloud, tmp_path / "w-ana")
    ana_worker.ensure(
        ModelSpec.model_validate({"kind": "checkpoints", "filename": "a.ckpt"} | _model_of(ana))
    )
    ana_worker.wait_for_mirrors()
    bucket = cloud.settings.models_bucket
    mirror = f"gs://{bucket}/models/sha256/{ana['sha256']}"
    assert _stored(cloud, mirror) == data
    name = ana["url"].removeprefix(f"gs://{bucket}/")
    spellings = {
        "double_slash": (f"gs://{bucket}//{name}", 400),
        "mirror": (mirror, 400),
    }
    for label, (url, status) in spellings.items():
        for who in ("bo", "ana"):  # nobody names an upload another way, not even its owner
            response = cloud.submit(_job_with({**_model_of(ana), "url": url}), **_as(who))
            assert response.status_code == status, (label, who, response.get_json())
            error = response.get_json()["error"]
            assert error["field"] == "models.0.url", (label, error)
        assert cloud.nothing_written(), label
        # A worker handed such a URL anyway reads nothing: the object a URL names is its path.
        spec = ModelSpec.model_validate(
            {"kind": "checkpoints", "filename": "b.ckpt", **_model_of(ana), "url": url}
        )
        worker = _worker_cache(cloud, tmp_path / f"w-{label}")
        with pytest.raises(ModelFetchError, match=r"gs:// URL|mirror"):
            worker.ensure(spec)
        assert not list((tmp_path / f"w-{label}" / "store" / "sha256").glob("*"))
