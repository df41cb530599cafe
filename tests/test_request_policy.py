"""Request policy: model URL allowlists, workflow shape and size limits (pure, no I/O)."""

from __future__ import annotations

import pytest

from comfyburst.domain.request_policy import (
    RequestPolicy,
    check_body_size,
    check_model_url,
    check_raw,
    check_request,
)
from comfyburst.errors import InvalidRequest, PayloadTooLarge
from comfyburst.schema import JobRequest
from tests._api_support import PNG_1X1, WORKFLOW, make_settings

POLICY = RequestPolicy.from_settings(make_settings())


@pytest.mark.parametrize(
    "url",
    [
        "https://civitai.com/api/download/models/12345?type=Model&format=SafeTensor",
        "https://huggingface.co/org/repo/resolve/main/model.safetensors?download=true",
        "https://cdn-lfs.huggingface.co/repos/ab/cd/file",  # a subdomain of an allowed host
        "https://CivitAI.com./api/download/models/1",  # case and the root dot do not matter
        "https://storage.googleapis.com:443/bucket/file.bin",  # the default port, spelled out
        "gs://models-b/checkpoints/sd15.safetensors",
        "http://127.0.0.1:8765/model.bin",  # the test-only plain-http model server
    ],
)
def test_allowed_model_urls(url: str) -> None:
    check_model_url(url, POLICY)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://civitai.com/x", "https://"),
        ("ftp://civitai.com/x", "https://"),
        ("file:///etc/passwd", "https://"),
        ("https://evilcivitai.com/x", "not allowed"),
        ("https://civitai.com.evil.example/x", "not allowed"),
        ("https://example.com/x", "not allowed"),
        ("https://user:pw@civitai.com/x", "user info"),
        ("https://civitai.com@evil.example/x", "user info"),
        ("https://civitai.com:8443/x", "port"),
        ("https://127.0.0.1/x", "IP address"),
        ("https://[::1]/x", "IP address"),
        ("https://169.254.169.254/computeMetadata/v1/", "IP address"),
        ("https://10.0.0.7/x", "IP address"),
        ("https://2130706433/x", "IP address"),
        ("https://127.1/x", "IP address"),
        ("https://localhost/x", "private"),
        ("https://metadata.google.internal/x", "private"),
        ("https://civitai.com/a b", "spaces"),
        ("https://civitai.com/\u00e9", "ASCII"),
        ("https:///nohost", "no host"),
        ("https://civitai.com:99999/x", "malformed"),
        ("gs://other-bucket/model.bin", "not a model bucket"),
        ("gs://models-b", "must name an object"),
        ("gs://models-b:80/x", "gs://BUCKET/OBJECT"),
        ("http://127.0.0.1:9999/model.bin", "https://"),  # not the configured host:port
        ("http://localhost:8765/model.bin", "https://"),
    ],
)
def test_refused_model_urls(url: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_model_url(url, POLICY, field="models.0.url")
    assert why in caught.value.message
    assert caught.value.field == "models.0.url"
    assert caught.value.http_status == 400


def test_body_size_limit_counts_base64_growth() -> None:
    policy = RequestPolicy(model_hosts=(), max_workflow_bytes=100, max_input_bytes=300)
    check_body_size(policy.max_body_bytes, policy)
    with pytest.raises(PayloadTooLarge):
        check_body_size(policy.max_body_bytes + 1, policy)
    assert policy.max_body_bytes == 100 + 400 + 1_000_000


@pytest.mark.parametrize(
    ("data", "error", "field"),
    [
        ([], InvalidRequest, None),
        ({}, InvalidRequest, "workflow"),
        ({"workflow": [1, 2]}, InvalidRequest, "workflow"),
        ({"workflow": {"1": "EmptyImage"}}, InvalidRequest, "workflow.1"),
        ({"workflow": {"1": {"inputs": {}}}}, InvalidRequest, "workflow.1.class_type"),
        ({"workflow": {"1": {"class_type": "X"}}}, InvalidRequest, "workflow.1.inputs"),
        (
            {"workflow": {"1": {"class_type": "X", "inputs": []}}},
            InvalidRequest,
            "workflow.1.inputs",
        ),
    ],
)
def test_raw_shape(data: object, error: type[Exception], field: str | None) -> None:
    with pytest.raises(error) as caught:
        check_raw(data, POLICY)
    assert getattr(caught.value, "field", None) == field


def test_raw_limits() -> None:
    policy = RequestPolicy(model_hosts=(), max_nodes=2, max_workflow_bytes=200, max_input_bytes=10)
    assert check_raw({"workflow": WORKFLOW}, policy) > 0
    three = {**WORKFLOW, "3": {"class_type": "PreviewImage", "inputs": {}}}
    with pytest.raises(PayloadTooLarge, match="3 nodes"):
        check_raw({"workflow": three}, policy)
    big = {"1": {"class_type": "X", "inputs": {"text": "a" * 300}}}
    with pytest.raises(PayloadTooLarge, match="bytes"):
        check_raw({"workflow": big}, policy)
    inputs = [{"name": "a.png", "data_b64": "QUJD" * 4}]  # 12 bytes decoded
    with pytest.raises(PayloadTooLarge) as caught:
        check_raw({"workflow": WORKFLOW, "inputs": inputs}, policy)
    assert caught.value.field == "inputs"


def test_check_request_names_the_bad_model_and_input() -> None:
    request = JobRequest.model_validate(
        {
            "workflow": WORKFLOW,
            "models": [
                {"kind": "loras", "filename": "a.safetensors", "url": "https://civitai.com/a"},
                {"kind": "loras", "filename": "b.safetensors", "url": "https://10.1.1.1/b"},
            ],
        }
    )
    with pytest.raises(InvalidRequest) as caught:
        check_request(request, POLICY)
    assert caught.value.field == "models.1.url"
    empty = JobRequest.model_validate(
        {"workflow": WORKFLOW, "inputs": [{"name": "e.png", "data_b64": ""}]}
    )
    with pytest.raises(InvalidRequest) as caught:
        check_request(empty, POLICY)
    assert caught.value.field == "inputs.0"
    ok = JobRequest.model_validate(
        {"workflow": WORKFLOW, "inputs": [{"name": "a.png", "data_b64": PNG_1X1}]}
    )
    check_request(ok, POLICY)


# --- the one gs:// rule (domain/gs_urls.py) -------------------------------------------------

MODELS_POLICY = RequestPolicy(
    model_hosts=(), gs_model_buckets=("models-b", "mine"), models_bucket="mine"
)
UPLOAD = "uploads/" + "0" * 32 + "/sha256/" + "ab" * 32


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (f"gs://mine//{UPLOAD}", "no empty"),  # another spelling of an upload's object
        (f"gs://mine/{UPLOAD}/", "no empty"),
        ("gs://mine/uploads//x", "no empty"),
        (f"gs://mine/./{UPLOAD}", "'.'"),
        (f"gs://mine/x/../{UPLOAD}", "'..'"),
        (f"gs://mine/{UPLOAD}?alt=media", "no query"),
        (f"gs://mine/{UPLOAD}#x", "fragment"),
        ("gs://mine/uploads%2Fx", "%"),
        (f"GS://mine/{UPLOAD}", "gs://BUCKET/OBJECT"),
        ("gs://Mine/x", "gs://BUCKET/OBJECT"),
        ("gs://mine/models/sha256/" + "ab" * 32, "mirror"),  # the workers' mirror
        ("gs://mine/models/urls/k.json", "mirror"),
    ],
)
def test_gs_urls_name_one_object_one_way_and_never_the_mirror(url: str, why: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_model_url(url, MODELS_POLICY, field="models.0.url")
    assert why in caught.value.message and caught.value.field == "models.0.url"


def test_canonical_gs_urls_pass_and_models_elsewhere_are_no_mirror() -> None:
    check_model_url(f"gs://mine/{UPLOAD}", MODELS_POLICY)
    check_model_url("gs://mine/checkpoints/sd15.safetensors", MODELS_POLICY)
    check_model_url("gs://models-b/models/sha256/" + "ab" * 32, MODELS_POLICY)  # not the mirror
