"""Adapter logic that needs no emulator: conversions, error mapping, key-less signing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import compute_v1

from comfyburst.adapters import _firestore_docs, compute
from comfyburst.adapters.clock import SystemClock
from comfyburst.adapters.gcs import IamUrlSigner
from comfyburst.adapters.pubsub import PubSubPublisher
from comfyburst.errors import CapacityError
from comfyburst.schema import JobError, Lease, VmRecord
from comfyburst.states import JobState


def test_converter_turns_models_enums_and_timestamps_into_firestore_values() -> None:
    class Nanos(datetime):
        """Stands for Firestore's DatetimeWithNanoseconds (a datetime subclass)."""

    plus_two = timezone(timedelta(hours=2))
    value = {
        "state": JobState.RUNNING,
        "at": Nanos(2026, 1, 2, 5, 4, 5, 999999, tzinfo=plus_two),
        "naive": datetime(2026, 1, 2, 3, 4, 5),
        "items": [JobError(type="t", message="m")],
    }
    converted = _firestore_docs.convert(value)
    assert converted["state"] == "running"
    assert type(converted["at"]) is datetime
    assert converted["at"] == datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=UTC)
    assert converted["naive"].tzinfo is UTC
    assert converted["items"][0]["type"] == "t"


def test_vm_record_round_trips_through_the_converter() -> None:
    vm = VmRecord(
        name="gpu-0",
        zone="z",
        lease=Lease(job_id="j", expires_at=datetime(2026, 1, 1, tzinfo=UTC)),
        models_cached=["checkpoints/a.safetensors"],
    )
    assert _firestore_docs.from_doc(VmRecord, _firestore_docs.to_doc(vm)) == vm


@pytest.mark.parametrize(
    ("key", "hashed"),
    [("order-42", False), ("a/b", True), ("..", True), ("__x__", True), ("x" * 201, True)],
)
def test_idempotency_doc_ids_are_valid(key: str, hashed: bool) -> None:
    doc_id = _firestore_docs.idempotency_doc_id(key)
    assert doc_id.startswith("sha256-") is hashed
    assert "/" not in doc_id
    assert _firestore_docs.idempotency_doc_id(key) == doc_id


def _api_error(cls: type[gexc.GoogleAPICallError], reason: str, **kw: Any) -> Any:
    return cls("boom", errors=[{"reason": reason, "message": "boom"}], **kw)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (
            _api_error(gexc.ServiceUnavailable, "ZONE_RESOURCE_POOL_EXHAUSTED"),
            "ZONE_RESOURCE_POOL_EXHAUSTED",
        ),
        (
            _api_error(gexc.ServiceUnavailable, "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"),
            "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
        ),
        (_api_error(gexc.Forbidden, "QUOTA_EXCEEDED"), "QUOTA_EXCEEDED"),
        (_api_error(gexc.BadRequest, "resourceNotReady"), "RESOURCE_NOT_READY"),
        (gexc.ServiceUnavailable("backend error"), "UNAVAILABLE"),
    ],
)
def test_start_maps_gce_errors_to_capacity_errors(error: Exception, reason: str) -> None:
    class Instances:
        def start_unary(self, request: Any) -> Any:
            raise error

    fleet = compute.ComputeFleet(Instances(), None, "p", ["z"], "pool=x")  # type: ignore[arg-type]
    with pytest.raises(CapacityError) as caught:
        fleet.start("z", "vm", "00000000-0000-4000-8000-000000000001")
    assert caught.value.reason == reason


def test_other_errors_pass_through() -> None:
    class Instances:
        def start_unary(self, request: Any) -> Any:
            raise gexc.Forbidden("no permission", errors=[{"reason": "forbidden"}])

    fleet = compute.ComputeFleet(Instances(), None, "p", ["z"], "pool=x")  # type: ignore[arg-type]
    with pytest.raises(gexc.Forbidden):
        fleet.start("z", "vm", "00000000-0000-4000-8000-000000000001")


def test_operation_error_reads_only_done_operations() -> None:
    failed = compute_v1.Operation(
        name="op",
        status=compute_v1.Operation.Status.DONE,
        error=compute_v1.Error(errors=[compute_v1.Errors(code="QUOTA_EXCEEDED")]),
    )
    pending = compute_v1.Operation(name="op", status=compute_v1.Operation.Status.RUNNING)
    done_ok = compute_v1.Operation(name="op", status=compute_v1.Operation.Status.DONE)
    assert compute._op_error_code(failed) == "QUOTA_EXCEEDED"
    assert compute._op_error_code(pending) is None
    assert compute._op_error_code(done_ok) is None


def test_list_filters_by_label_in_every_zone() -> None:
    seen: list[compute_v1.ListInstancesRequest] = []

    class Instances:
        def list(self, request: compute_v1.ListInstancesRequest) -> list[compute_v1.Instance]:
            seen.append(request)
            return [
                compute_v1.Instance(
                    name=f"vm-{request.zone}",
                    zone=f"https://x/zones/{request.zone}",
                    status="TERMINATED",
                    labels={"pool": "x"},
                    metadata=compute_v1.Metadata(
                        fingerprint="f", items=[compute_v1.Items(key="k", value="v")]
                    ),
                )
            ]

    fleet = compute.ComputeFleet(Instances(), None, "p", ["a", "b"], "pool=x")  # type: ignore[arg-type]
    vms = fleet.list()
    assert [r.filter for r in seen] == ['labels.pool = "x"'] * 2
    assert [(v.name, v.zone, v.metadata, v.fingerprint) for v in vms] == [
        ("vm-a", "a", {"k": "v"}, "f"),
        ("vm-b", "b", {"k": "v"}, "f"),
    ]


class _FakeCredentials:
    """Compute Engine-style default credentials: a token after refresh, an SA email."""

    service_account_email = "runtime@p.iam.gserviceaccount.com"

    def __init__(self) -> None:
        self.token: str | None = None
        self.valid = False
        self.refreshed_with: list[Any] = []

    def refresh(self, request: Any) -> None:
        self.refreshed_with.append(request)
        self.token, self.valid = f"token-{len(self.refreshed_with)}", True


class _FakeStorage:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def bucket(self, bucket: str) -> Any:
        def blob(name: str) -> Any:
            def generate_signed_url(**kwargs: Any) -> str:
                self.calls.append((bucket, name, kwargs))
                return f"https://signed/{bucket}/{name}"

            return SimpleNamespace(generate_signed_url=generate_signed_url)

        return SimpleNamespace(blob=blob)


def test_iam_signer_refreshes_then_signs_with_email_and_token() -> None:
    storage, credentials = _FakeStorage(), _FakeCredentials()
    signer = IamUrlSigner(storage, credentials, request_factory=lambda: "http-request")
    assert (
        signer.sign_get("b", "jobs/j/outputs/x.png", 900) == "https://signed/b/jobs/j/outputs/x.png"
    )
    signer.sign_get("b", "y", 60)
    assert credentials.refreshed_with == ["http-request"]  # a valid token is reused
    bucket, name, kwargs = storage.calls[0]
    assert (bucket, name) == ("b", "jobs/j/outputs/x.png")
    assert kwargs == {
        "version": "v4",
        "expiration": timedelta(seconds=900),
        "method": "GET",
        "service_account_email": "runtime@p.iam.gserviceaccount.com",
        "access_token": "token-1",
    }


def test_iam_signer_uses_the_configured_account() -> None:
    storage = _FakeStorage()
    signer = IamUrlSigner(
        storage, _FakeCredentials(), "signer@p.iam.gserviceaccount.com", request_factory=object
    )
    signer.sign_get("b", "n", 60)
    assert storage.calls[0][2]["service_account_email"] == "signer@p.iam.gserviceaccount.com"


def test_publisher_waits_for_the_server() -> None:
    waited: list[float] = []

    class Future:
        def result(self, timeout: float) -> str:
            waited.append(timeout)
            return "msg-1"

    class Client:
        def publish(self, topic: str, data: bytes, **attrs: str) -> Future:
            assert (topic, data, attrs) == ("projects/p/topics/t", b"x", {"job_id": "j"})
            return Future()

    assert (
        PubSubPublisher(Client(), "projects/p/topics/t", 7.0).publish(b"x", {"job_id": "j"})
        == "msg-1"
    )
    assert waited == [7.0]


def test_system_clock_is_utc() -> None:
    assert SystemClock().now().tzinfo is UTC
