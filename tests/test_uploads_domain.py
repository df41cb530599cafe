"""The upload rules as pure functions (domain/uploads.py): who may upload, where an upload
lives, what a job naming one must match."""

from __future__ import annotations

import pytest

from comfyburst.domain import uploads as rules
from comfyburst.errors import Forbidden, InvalidRequest, UploadInvalid
from comfyburst.schema import JobRequest
from tests._api_support import ckpt_body

BUCKET = "models-b"
SHA = "ab" * 32


def _request(url: str, **model: object) -> JobRequest:
    body = ckpt_body()
    body["models"] = [{"kind": "checkpoints", "filename": "my.safetensors", "url": url, **model}]
    return JobRequest.model_validate(body)


def test_owners_are_apart_and_carry_no_principal_text() -> None:
    ana, bo = rules.object_name("key:ana", SHA), rules.object_name("key:bo", SHA)
    assert ana != bo and "ana" not in ana and ana.endswith(f"/sha256/{SHA}")


def test_only_listed_callers_or_admins_may_upload() -> None:
    assert rules.may_upload("key:ana", ["key:ana"], [])
    assert not rules.may_upload("key:bo", ["key:ana"], [])
    assert rules.may_upload("key:ops", [], ["key:ops"])
    assert rules.may_upload("anyone@example.com", ["*"], [])
    assert not rules.may_upload(None, ["*"], [])


def test_upload_requests_are_bounded() -> None:
    with pytest.raises(InvalidRequest) as too_big:
        rules.parse_upload_request({"sha256": SHA, "size_bytes": 11}, max_size_bytes=10)
    assert too_big.value.field == "size_bytes"
    parsed = rules.parse_upload_request(
        {"sha256": SHA.upper(), "size_bytes": 10}, max_size_bytes=10
    )
    assert parsed.sha256 == SHA  # lowercased


def test_a_job_naming_an_upload_must_match_it() -> None:
    url = rules.upload_url(BUCKET, "key:ana", SHA)
    sizes = {rules.object_name("key:ana", SHA): 100}
    ok = _request(url, sha256=SHA, size_bytes=100)
    rules.check_uploaded_models(ok, BUCKET, "key:ana", sizes.get)  # no error
    with pytest.raises(Forbidden):
        rules.check_uploaded_models(ok, BUCKET, "key:bo", sizes.get)
    with pytest.raises(UploadInvalid, match="holds 100 bytes"):
        rules.check_uploaded_models(
            _request(url, sha256=SHA, size_bytes=99), BUCKET, "key:ana", sizes.get
        )
    with pytest.raises(UploadInvalid, match="missing"):
        rules.check_uploaded_models(ok, BUCKET, "key:ana", {}.get)
    with pytest.raises(UploadInvalid, match="URL names"):
        rules.check_uploaded_models(
            _request(url, sha256="cd" * 32, size_bytes=100), BUCKET, "key:ana", sizes.get
        )
    odd = _request(f"gs://{BUCKET}/uploads/elsewhere.bin", sha256=SHA, size_bytes=100)
    with pytest.raises(UploadInvalid, match="must be gs://"):
        rules.check_uploaded_models(odd, BUCKET, "key:ana", sizes.get)
    # Other model URLs are not uploads: left to the URL rules.
    other = _request(f"gs://{BUCKET}/models/x.safetensors")
    rules.check_uploaded_models(other, BUCKET, "key:ana", {}.get)


def test_stored_objects_of_other_bytes_are_not_the_file() -> None:
    asked = rules.UploadRequest(SHA, 100, "A" * 22 + "==")
    assert rules.holds_the_file(asked, 100, "A" * 22 + "==")
    assert rules.holds_the_file(asked, 100, None)  # storage knows no MD5 (composite)
    assert not rules.holds_the_file(asked, 100, "B" * 22 + "==")
    assert not rules.holds_the_file(asked, 99, "A" * 22 + "==")
