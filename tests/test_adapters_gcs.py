"""GcsBlobStore and KeyFileUrlSigner against fake-gcs-server."""

from __future__ import annotations

import pytest
import requests

from comfyburst.errors import PreconditionFailed

pytestmark = pytest.mark.emulator


def test_write_read_generation_list_delete(blob_store, function_settings) -> None:
    bucket = function_settings.jobs_bucket
    gen = blob_store.write(bucket, "jobs/j1/request.json", b"{}", "application/json")
    blob_store.write(bucket, "jobs/j1/inputs/a.png", b"png")
    blob_store.write(bucket, "jobs/j2/request.json", b"{}")
    assert blob_store.generation(bucket, "jobs/j1/request.json") == gen
    assert blob_store.read(bucket, "jobs/j1/request.json") == b"{}"
    assert sorted(blob_store.list(bucket, "jobs/j1/")) == [
        "jobs/j1/inputs/a.png",
        "jobs/j1/request.json",
    ]
    blob_store.delete(bucket, "jobs/j1/request.json")
    blob_store.delete(bucket, "jobs/j1/request.json")  # deleting twice is fine
    assert blob_store.read(bucket, "jobs/j1/request.json") is None
    assert blob_store.generation(bucket, "jobs/j1/request.json") is None


def test_write_if_absent_twice_fails(blob_store, function_settings) -> None:
    bucket = function_settings.signals_bucket
    blob_store.write(bucket, "jobs/j1/done.json", b"1", if_generation_match=0)
    with pytest.raises(PreconditionFailed):
        blob_store.write(bucket, "jobs/j1/done.json", b"2", if_generation_match=0)
    assert blob_store.read(bucket, "jobs/j1/done.json") == b"1"


def test_upload_and_download_files(blob_store, function_settings, tmp_path) -> None:
    bucket = function_settings.outputs_bucket
    source = tmp_path / "big.bin"
    payload = bytes(range(256)) * 8192  # 2 MiB, more than one download chunk
    source.write_bytes(payload)
    gen = blob_store.upload_file(bucket, "jobs/j1/outputs/big.bin", str(source), "image/png")
    assert gen == blob_store.generation(bucket, "jobs/j1/outputs/big.bin")
    target = tmp_path / "copy.bin"
    assert blob_store.download_file(bucket, "jobs/j1/outputs/big.bin", str(target))
    assert target.read_bytes() == payload
    missing = tmp_path / "missing.bin"
    assert not blob_store.download_file(bucket, "jobs/j1/outputs/nope", str(missing))
    assert not missing.exists()
    assert not (tmp_path / "missing.bin.part").exists()


def test_signed_url_serves_the_bytes(blob_store, signer, function_settings) -> None:
    bucket = function_settings.outputs_bucket
    blob_store.write(bucket, "jobs/j1/outputs/x.png", b"\x89PNG-bytes", "image/png")
    url = signer.sign_get(bucket, "jobs/j1/outputs/x.png", 600)
    assert "X-Goog-Signature=" in url
    assert "X-Goog-Expires=600" in url
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == b"\x89PNG-bytes"
