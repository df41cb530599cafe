"""Comfy API v2 assets through the app of functions/main.py on the emulators, driven by the
pinned comfy-sdk's own transport and asset handles (httpx over WSGI, nothing mocked): upload
with a server-side blake3, by-hash, from-hash, get, content, delete; two callers' keys see
nothing of each other's; every refusal answers the v2 envelope and writes nothing."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from blake3 import blake3
from comfy_low.errors import ApiError
from comfy_low.transport import ComfyLow
from comfy_sdk.assets import AssetFactory
from comfy_sdk.exceptions import BlobNotFound, HashMismatch, NotFound, to_sdk_error
from PIL import Image

from comfyburst.api._v2_assets import PREFIX
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)
from tests.test_api_v2 import KEYS, _as, _error, cloud  # noqa: F401  (fixture)

pytestmark = pytest.mark.emulator


def png_bytes(colour: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(out, format="PNG")
    return out.getvalue()


def sdk(cloud: Cloud, who: str) -> ComfyLow:  # noqa: F811
    """The SDK's transport for one caller, sending its requests to the in-process app."""
    base = "http://api.test"
    client = httpx.Client(
        transport=httpx.WSGITransport(app=cloud.client.application), follow_redirects=False
    )
    return ComfyLow(base, KEYS[who], client=client)


@pytest.fixture
def lows(cloud: Cloud) -> Iterator[dict[str, ComfyLow]]:  # noqa: F811
    made = {who: sdk(cloud, who) for who in KEYS}
    yield made
    for low in made.values():
        low.close()


def stored(cloud: Cloud) -> list[str]:  # noqa: F811
    return cloud.blobs.list(cloud.settings.jobs_bucket, PREFIX + "/")


def _multipart(fields: dict[str, str], file: bytes | None, name: str = "a.png") -> Any:
    return {
        "data": {**fields, **({"file": (io.BytesIO(file), name, "image/png")} if file else {})},
        "content_type": "multipart/form-data",
    }


def test_the_sdks_asset_handle_uploads_then_dedups_through_by_hash_and_from_hash(
    cloud: Cloud,  # noqa: F811
    lows: dict[str, ComfyLow],
) -> None:
    data = png_bytes()
    digest = "blake3:" + blake3(data).hexdigest()
    first = AssetFactory(lows["ana"]).from_bytes(data, filename="in.png")
    asset_id = first.commit()  # HEAD by-hash misses, so the SDK posts the multipart upload
    assert first.created_new is True and first.hash == digest
    assert lows["ana"].head_asset_by_hash(digest) is True
    again = AssetFactory(lows["ana"]).from_bytes(data, filename="other.png")
    assert again.commit() == asset_id and again.created_new is False  # by-hash, then from-hash
    got = lows["ana"].get_asset(asset_id)
    assert (got.hash, got.size_bytes, got.content_type) == (digest, len(data), "image/png")
    assert got.file_path == "in.png" and got.job_id is None and got.expires_at is None
    # The signed URL serves the very bytes.
    assert httpx.get(str(got.url), timeout=30).content == data
    location, _ = lows["ana"].get_asset_content_url(asset_id)
    assert location.split("?")[0] == str(got.url).split("?")[0]
    assert len(stored(cloud)) == 2  # the bytes and their record, once


def test_a_second_caller_can_neither_see_fetch_find_nor_delete_the_asset(
    cloud: Cloud,  # noqa: F811
    lows: dict[str, ComfyLow],
) -> None:
    data = png_bytes((1, 2, 3))
    digest = "blake3:" + blake3(data).hexdigest()
    asset_id = AssetFactory(lows["ana"]).from_bytes(data, filename="a.png").commit()
    bo = lows["bo"]
    assert bo.head_asset_by_hash(digest) is False  # the same 404 as a miss
    for call in (
        lambda: bo.get_asset(asset_id),
        lambda: bo.get_asset_content_url(asset_id),
        lambda: bo.delete_asset(asset_id),
    ):
        with pytest.raises(ApiError) as caught:
            call()
        assert isinstance(to_sdk_error(caught.value), NotFound)
    with pytest.raises(ApiError) as caught:
        bo.asset_from_hash(digest)
    assert isinstance(to_sdk_error(caught.value), BlobNotFound)
    assert lows["ana"].get_asset(asset_id).id == asset_id  # still there
    # bo's upload of the same bytes is bo's own asset, created new, in bo's own folder.
    theirs = AssetFactory(bo).from_bytes(data, filename="b.png")
    theirs.commit()
    assert theirs.created_new is True and len(stored(cloud)) == 4


def test_delete_removes_the_asset_and_its_bytes(
    cloud: Cloud,  # noqa: F811
    lows: dict[str, ComfyLow],
) -> None:
    data = png_bytes((9, 9, 9))
    handle = AssetFactory(lows["ana"]).from_bytes(data, filename="d.png")
    asset_id = handle.commit()
    handle.delete()
    assert stored(cloud) == []
    assert lows["ana"].head_asset_by_hash("blake3:" + blake3(data).hexdigest()) is False
    with pytest.raises(ApiError) as caught:
        lows["ana"].delete_asset(asset_id)
    assert isinstance(to_sdk_error(caught.value), NotFound)


def test_a_wrong_expected_hash_is_hash_mismatch_and_writes_nothing(
    cloud: Cloud,  # noqa: F811
    lows: dict[str, ComfyLow],
) -> None:
    data = png_bytes()
    wrong = "blake3:" + blake3(b"other bytes").hexdigest()
    with pytest.raises(ApiError) as caught:
        lows["ana"].post_assets(io.BytesIO(data), "image/png", "a.png", expected_hash=wrong)
    assert isinstance(to_sdk_error(caught.value), HashMismatch)
    assert caught.value.http_status == 409
    assert stored(cloud) == []


@pytest.mark.parametrize(
    ("form", "status", "code", "field"),
    [
        ({"fields": {"file_path": "a.png"}, "file": None}, 422, "invalid_request", "file"),
        ({"fields": {"file_path": "../x.png"}, "file": b"x"}, 422, "invalid_request",
         "file_path"),
        ({"fields": {"file_path": "x.png [output]"}, "file": b"x"}, 422, "invalid_request",
         "file_path"),
        ({"fields": {"content_type": "nonsense"}, "file": b"x"}, 422, "invalid_request",
         "content_type"),
        ({"fields": {"expected_hash": "sha256:00"}, "file": b"x"}, 422, "invalid_request",
         "expected_hash"),
        ({"fields": {"colour": "red"}, "file": b"x"}, 422, "invalid_request", "colour"),
    ],
)  # fmt: skip
def test_bad_upload_forms_are_refused_in_the_envelope_and_write_nothing(
    cloud: Cloud,  # noqa: F811
    form: dict[str, Any],
    status: int,
    code: str,
    field: str,
) -> None:
    response = cloud.client.post(
        "/api/v2/assets", headers=_as("ana"), **_multipart(form["fields"], form["file"])
    )
    assert _error(response, status, code)["details"]["field"] == field
    assert stored(cloud) == []


def test_a_part_without_a_name_is_an_unknown_field(cloud: Cloud) -> None:  # noqa: F811
    # Found by schemathesis: werkzeug names such a part None.
    body = (
        b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n"
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        b"x\r\n--b--\r\n"
    )
    response = cloud.client.post(
        "/api/v2/assets",
        headers=_as("ana"),
        data=body,
        content_type="multipart/form-data; boundary=b",
    )
    assert _error(response, 422, "invalid_request")["details"]["field"] == "None"
    assert stored(cloud) == []


def test_not_multipart_too_large_and_no_credentials_are_refused(cloud: Cloud) -> None:  # noqa: F811
    as_json = cloud.client.post("/api/v2/assets", headers=_as("ana"), json={"file": "x"})
    _error(as_json, 422, "invalid_request")
    big = b"\0" * (cloud.settings.max_input_bytes + 1)
    _error(
        cloud.client.post("/api/v2/assets", headers=_as("ana"), **_multipart({}, big)),
        413,
        "payload_too_large",
    )
    _error(cloud.client.post("/api/v2/assets", **_multipart({}, b"x")), 401, "unauthorized")
    assert stored(cloud) == []


def test_from_hash_refuses_bad_bodies_and_unknown_hashes(cloud: Cloud) -> None:  # noqa: F811
    post = cloud.client.post
    bad = post("/api/v2/assets/from-hash", headers=_as("ana"), json={"hash": "blake3:zz"})
    assert _error(bad, 400, "invalid_request")["details"]["field"] == "hash"
    extra = post(
        "/api/v2/assets/from-hash", headers=_as("ana"), json={"hash": "blake3:" + "0" * 64, "x": 1}
    )
    _error(extra, 400, "invalid_request")
    unknown = post(
        "/api/v2/assets/from-hash", headers=_as("ana"), json={"hash": "blake3:" + "0" * 64}
    )
    _error(unknown, 404, "blob_not_found")
    huge = post("/api/v2/assets/from-hash", headers=_as("ana"), data=b"{" * 5000)
    _error(huge, 413, "payload_too_large")
    assert (
        cloud.client.head("/api/v2/assets/by-hash/nonsense", headers=_as("ana")).status_code == 404
    )
    assert stored(cloud) == []
