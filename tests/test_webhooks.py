"""Webhook signing, the delivery use case and the webhook URL rule (no network).

`verify` below is a Standard Webhooks verifier written from the specification's text, kept
apart from the code under test: key = base64 of the secret after `whsec_`, signed content
`{id}.{timestamp}.{body}`, `v1,` + base64 HMAC-SHA256, several space-separated signatures of
which one must match, timestamps within a tolerance.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from comfyburst.domain import webhooks
from comfyburst.domain.request_policy import (
    check_webhook_address,
    check_webhook_url,
)
from comfyburst.errors import InvalidRequest
from comfyburst.schema import Job, RequestSummary, ResultMessage
from comfyburst.services.results import encode_result
from comfyburst.services.webhooks import (
    DeliveryDeps,
    DeliveryFailed,
    PubSubMessage,
    deliver,
    parse_pubsub_event,
)
from comfyburst.states import JobState
from tests.fakes import FixedClock, InMemoryJobStore

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
TOLERANCE_S = 300


def verify(secret: str, headers: dict[str, str], body: bytes, now_s: int) -> bool:
    """True when one signature of the delivery matches the secret (spec-written)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(now_s - int(timestamp)) > TOLERANCE_S:
        return False
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    for entry in headers["webhook-signature"].split(" "):
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


# --- signing ---------------------------------------------------------------------------------


def test_signature_verifies_with_a_spec_written_verifier() -> None:
    secrets = webhooks.parse_secrets([SECRET])
    body = b'{"job_id":"j1","status":"succeeded"}'
    headers = webhooks.webhook_headers(secrets, "msg_j1_succeeded", 1_700_000_000, body)
    assert headers["webhook-id"] == "msg_j1_succeeded"
    assert headers["webhook-timestamp"] == "1700000000"
    assert verify(SECRET, headers, body, 1_700_000_010)
    assert not verify(SECRET, headers, body + b" ", 1_700_000_010)  # body tampered
    assert not verify(OLD_SECRET, headers, body, 1_700_000_010)  # other secret
    assert not verify(SECRET, headers, body, 1_700_000_000 + TOLERANCE_S + 1)  # replayed late


def test_rotation_signs_with_both_secrets() -> None:
    secrets = webhooks.parse_secrets([SECRET, OLD_SECRET])
    body = b"{}"
    headers = webhooks.webhook_headers(secrets, "msg_x_failed", 1_700_000_000, body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert verify(SECRET, headers, body, 1_700_000_000)
    assert verify(OLD_SECRET, headers, body, 1_700_000_000)


def test_secrets_parse_strictly_and_never_show() -> None:
    for bad in ("k" * 40, "whsec_not base64!", "whsec_" + base64.b64encode(b"short").decode()):
        with pytest.raises(webhooks.WebhookSecretInvalid):
            webhooks.WebhookSecret.parse(bad)
    secret = webhooks.WebhookSecret.parse(SECRET)
    assert "k" * 8 not in repr(secret) and SECRET not in repr(secret)
    assert webhooks.parse_secrets([None, "", SECRET, SECRET]) == (secret,)
    fresh = webhooks.new_secret_text()
    assert webhooks.WebhookSecret.parse(fresh).text() == fresh
    with pytest.raises(ValueError, match="no webhook signing secret"):
        webhooks.signature_header((), "msg_a", 1, b"")


def test_webhook_id_is_stable_per_job_and_status() -> None:
    assert webhooks.webhook_id("j1", "succeeded") == webhooks.webhook_id("j1", "succeeded")
    assert webhooks.webhook_id("j1", "succeeded") != webhooks.webhook_id("j1", "failed")
    with pytest.raises(ValueError):
        webhooks.signed_content("a.b", 1, b"")


# --- delivery use case -----------------------------------------------------------------------


class RecordingSender:
    def __init__(self, answers: list[int | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> int:
        self.calls.append((url, body, headers))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def make_job(
    job_id: str,
    webhook_url: str | None = None,
    state: JobState = JobState.SUCCEEDED,
    *,
    caller: str | None = None,
    created_at: datetime = datetime(2026, 1, 1, tzinfo=UTC),
) -> Job:
    """A job document as the store keeps it (for tests that seed jobs directly)."""
    return Job(
        job_id=job_id,
        state=state,
        request=RequestSummary(
            node_count=1, class_types=[], models=[], input_names=[], workflow_bytes=1
        ),
        created_at=created_at,
        deadline_at=created_at + timedelta(hours=1),
        state_changed_at=created_at,
        caller=caller,
        webhook_url=webhook_url,
    )


def _message(job_id: str, status: JobState = JobState.SUCCEEDED) -> PubSubMessage:
    result = ResultMessage(job_id=job_id, status=status, attempt=1)
    return PubSubMessage(encode_result(result), result.attributes(), "m1")


def _deps(store: InMemoryJobStore, sender: RecordingSender) -> DeliveryDeps:
    secrets = webhooks.parse_secrets([SECRET])
    return DeliveryDeps(store, sender, FixedClock(), lambda: secrets)


def test_delivery_posts_the_published_bytes_signed_and_keeps_its_id_on_retry() -> None:
    store = InMemoryJobStore()
    store.create_job(make_job("j1", "https://hooks.example.com/in"))
    sender = RecordingSender([500, DeliveryFailed("timed out"), 204])
    deps, message = _deps(store, sender), _message("j1")
    for _ in range(2):
        with pytest.raises(DeliveryFailed):
            deliver(deps, message)
    outcome = deliver(deps, message)
    assert outcome.delivered and outcome.status_code == 204
    ids = {headers["webhook-id"] for _url, _body, headers in sender.calls}
    assert ids == {"msg_j1_succeeded"}
    now_s = int(FixedClock().now().timestamp())
    for url, body, headers in sender.calls:
        assert url == "https://hooks.example.com/in" and body == message.data
        assert verify(SECRET, headers, body, now_s)


@pytest.mark.parametrize(
    ("job", "data", "reason"),
    [
        (None, None, "job_gone"),
        (make_job("j1", None), None, "no_webhook"),
        (make_job("j1", "https://hooks.example.com/"), b"not json", "not_a_result"),
    ],
)
def test_nothing_to_deliver_is_acknowledged(job: Job | None, data: bytes | None, reason: str):
    store = InMemoryJobStore()
    if job is not None:
        store.create_job(job)
    sender = RecordingSender([])
    message = _message("j1")
    if data is not None:
        message = PubSubMessage(data, {}, "m1")
    assert deliver(_deps(store, sender), message).reason == reason
    assert sender.calls == []


def test_a_url_refused_at_delivery_is_acknowledged_not_retried() -> None:
    store = InMemoryJobStore()
    store.create_job(make_job("j1", "https://hooks.example.com/in"))
    refused = InvalidRequest("resolves to a non-public address", field="webhook_url")
    outcome = deliver(_deps(store, RecordingSender([refused])), _message("j1"))
    assert not outcome.delivered and outcome.reason == "url_refused"


def test_no_secret_keeps_the_message_for_later() -> None:
    store = InMemoryJobStore()
    store.create_job(make_job("j1", "https://hooks.example.com/in"))
    deps = DeliveryDeps(store, RecordingSender([]), FixedClock(), lambda: ())
    with pytest.raises(DeliveryFailed, match="no webhook signing secret"):
        deliver(deps, _message("j1"))


def test_parse_pubsub_event_reads_both_shapes() -> None:
    data = base64.b64encode(b'{"a":1}').decode()
    eventarc = {"message": {"data": data, "attributes": {"job_id": "j"}, "messageId": "7"}}
    converted = {"message": {"@type": "x", "data": data, "attributes": {}, "messageId": "8"}}
    assert parse_pubsub_event(eventarc) == PubSubMessage(b'{"a":1}', {"job_id": "j"}, "7")
    assert parse_pubsub_event(converted).message_id == "8"
    for bad in ({}, {"message": "x"}, {"message": {"data": "%%%"}}):
        with pytest.raises(ValueError):
            parse_pubsub_event(bad)
    assert json.loads(parse_pubsub_event(eventarc).data) == {"a": 1}


# --- the URL rule ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.example.com/in",  # not https
        "https://127.0.0.1/in",  # loopback
        "http://127.0.0.1:9000/in",
        "https://[::1]/in",
        "https://10.0.0.5/in",  # private literal
        "https://169.254.169.254/latest",  # metadata server
        "https://2130706433/in",  # numeric form of 127.0.0.1
        "https://localhost/in",
        "https://metadata.google.internal/x",
        "https://printer.local/x",
        "https://intranet/x",  # single-label name
        "https://user:pw@hooks.example.com/x",
        "ftp://hooks.example.com/x",
        "https://hooks.example.com/x#frag",
        "https://hooks.exa mple.com/x",
        "https://hooks.example.com:8443/x",  # the one URL rule's https port
    ],
)
def test_webhook_urls_refused(url: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_webhook_url(url)
    assert caught.value.field == "webhook_url"


def test_loopback_only_with_the_local_setting() -> None:
    target = check_webhook_url("http://127.0.0.1:9000/in?x=1", allow_loopback=True)
    assert (target.scheme, target.host, target.port, target.path) == (
        "http",
        "127.0.0.1",
        9000,
        "/in?x=1",
    )
    with pytest.raises(InvalidRequest):
        check_webhook_url("http://10.0.0.1:9000/in", allow_loopback=True)
    with pytest.raises(InvalidRequest):
        check_webhook_url("http://hooks.example.com/in", allow_loopback=True)


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "127.0.0.1",
        "::1",
        "fd00::1",
        "fe80::1%eth0",
        "::ffff:10.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
    ],
)
def test_resolved_addresses_refused(address: str) -> None:
    with pytest.raises(InvalidRequest, match="non-public"):
        check_webhook_address(address, allow_loopback=False)


def test_public_and_allowed_loopback_addresses_pass() -> None:
    check_webhook_address("8.8.8.8", allow_loopback=False)
    check_webhook_address("2001:4860:4860::8888", allow_loopback=False)
    check_webhook_address("127.0.0.1", allow_loopback=True)
    with pytest.raises(InvalidRequest):
        check_webhook_address("10.0.0.1", allow_loopback=True)


def test_sender_checks_every_resolved_address_before_connecting() -> None:
    from comfyburst.adapters.webhook_http import HttpWebhookSender

    # A name resolving to a public and a private address is refused without connecting.
    sender = HttpWebhookSender(resolver=lambda host, port: ["93.184.215.14", "10.0.0.7"])
    with pytest.raises(InvalidRequest, match="non-public"):
        sender.post("https://hooks.example.com/in", b"{}", {}, 1.0)


# --- at submit ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "settings"),
    [
        ("http://127.0.0.1:9000/hook", {}),  # loopback without the local cloud's setting
        ("https://127.0.0.1/hook", {}),
        ("https://10.0.0.8/hook", {"webhook_allow_loopback": True}),  # private, even locally
        ("https://192.168.1.20/hook", {}),
        ("https://metadata.google.internal/hook", {}),
        ("http://hooks.example.com/hook", {}),  # not https
    ],
)
def test_submit_refuses_webhooks_to_private_or_loopback_addresses(
    url: str, settings: dict[str, object]
) -> None:
    from tests._api_support import body, fake_env

    # Explicit: a session that started the local cloud has its allow-loopback in the env.
    env = fake_env(**{"webhook_allow_loopback": False, **settings})
    response = env.submit(body(webhook_url=url))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["field"] == "webhook_url"
    assert env.nothing_written()


def test_submit_keeps_an_accepted_webhook_url_on_the_job() -> None:
    from tests._api_support import body, fake_env

    env = fake_env(webhook_allow_loopback=True)
    response = env.submit(body(webhook_url="http://127.0.0.1:9000/hook"))
    assert response.status_code == 202, response.get_json()
    job = env.store.get_job(response.get_json()["job_id"])
    assert job is not None and job.webhook_url == "http://127.0.0.1:9000/hook"
    assert response.get_json()["webhook_url"] == "http://127.0.0.1:9000/hook"
    strict = fake_env(webhook_allow_loopback=False)
    accepted = strict.submit(body(webhook_url="https://hooks.example.com/comfyburst"))
    assert accepted.status_code == 202


def test_results_of_jobs_with_a_webhook_carry_the_attribute_the_subscription_filters_on() -> None:
    from comfyburst.services.results import WEBHOOK_ATTRIBUTE, publish_result
    from tests.fakes import InMemoryPublisher

    store, publisher = InMemoryJobStore(), InMemoryPublisher()
    for job in (make_job("with", "https://hooks.example.com/in"), make_job("without")):
        store.create_job(job)
        publish_result(store, publisher, job, FixedClock().now())
    by_job = {attrs["job_id"]: attrs for _data, attrs in publisher.messages}
    assert by_job["with"][WEBHOOK_ATTRIBUTE] == "1"
    assert WEBHOOK_ATTRIBUTE not in by_job["without"]
