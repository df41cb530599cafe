"""Per-caller limits: the JSON form and its merge, the rules, the settings check, and the
admission of racing submits of one caller (no network, no sleeps)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import ValidationError

from comfyburst.domain.caller_limits import (
    QUEUE_FULL_RETRY_AFTER_S,
    CallerLimits,
    Limits,
    check_class,
    check_environments,
    check_queue,
)
from comfyburst.errors import EnvironmentLimitReached, GpuClassForbidden, QueueFull
from comfyburst.services._admission import Admission
from tests._api_support import make_settings

LIMITS = CallerLimits.model_validate(
    {
        "default": {"max_queued": 10, "gpu_classes": ["t4"]},
        "callers": {
            "key:farm": {"max_queued": 500},  # the default's classes still apply
            "ops@example.com": {"max_queued": 10_000, "gpu_classes": ["t4", "h100"]},
            "key:unset": {"max_queued": None},  # null, as terraform passes unset: the default's
        },
    }
)


def test_an_override_replaces_only_the_fields_it_names() -> None:
    assert LIMITS.for_caller("key:nobody") == Limits(max_queued=10, gpu_classes=["t4"])
    assert LIMITS.for_caller(None) == Limits(max_queued=10, gpu_classes=["t4"])
    assert LIMITS.for_caller("key:farm") == Limits(max_queued=500, gpu_classes=["t4"])
    assert LIMITS.for_caller("ops@example.com") == Limits(
        max_queued=10_000, gpu_classes=["t4", "h100"]
    )
    assert LIMITS.for_caller("key:unset") == LIMITS.default
    assert CallerLimits().for_caller("key:any") == Limits()  # nothing set: no limit
    assert LIMITS.class_names() == {"t4", "h100"}


def test_the_json_form_refuses_unknown_fields_and_negative_limits() -> None:
    with pytest.raises(ValidationError):
        CallerLimits.model_validate({"default": {"max_jobs": 3}})
    with pytest.raises(ValidationError):
        CallerLimits.model_validate({"callers": {"key:a": {"max_queued": -1}}})
    with pytest.raises(ValidationError):
        CallerLimits.model_validate({"defaults": {}})


def test_class_rule_names_the_class_and_what_is_allowed() -> None:
    check_class(Limits(gpu_classes=["t4"]), "t4")
    check_class(Limits(), "h100")
    with pytest.raises(GpuClassForbidden) as refused:
        check_class(Limits(gpu_classes=["t4"]), "h100")
    body = refused.value.to_body()["error"]
    assert (refused.value.http_status, body["code"]) == (403, "gpu_class_forbidden")
    assert body["details"] == {"gpu_class": "h100", "allowed": ["t4"]}


def test_queue_rule_refuses_at_the_limit_with_a_retry_after() -> None:
    check_queue(Limits(max_queued=2), 1)
    check_queue(Limits(), 10_000)
    with pytest.raises(QueueFull) as refused:
        check_queue(Limits(max_queued=2), 2)
    assert refused.value.http_status == 429
    assert refused.value.retry_after_s == QUEUE_FULL_RETRY_AFTER_S
    assert refused.value.to_body()["error"]["details"] == {"max_queued": 2}


def test_environment_rule_refuses_at_the_limit_with_403_and_its_own_code() -> None:
    limits = CallerLimits.model_validate(
        {"default": {"max_environments": 2}, "callers": {"key:lab": {"max_environments": 0}}}
    )
    check_environments(limits.for_caller("key:any"), 1)
    check_environments(Limits(), 10_000)
    with pytest.raises(EnvironmentLimitReached) as refused:
        check_environments(limits.for_caller("key:any"), 2)
    body = refused.value.to_body()["error"]
    assert (refused.value.http_status, body["code"]) == (403, "environment_limit_reached")
    assert body["details"] == {"max_environments": 2, "environments": 2}
    with pytest.raises(EnvironmentLimitReached):
        check_environments(limits.for_caller("key:lab"), 0)  # 0: none at all
    with pytest.raises(ValidationError):
        CallerLimits.model_validate({"default": {"max_environments": -1}})


def test_settings_read_the_json_and_refuse_a_class_the_deployment_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "COMFYBURST_CALLER_LIMITS",
        '{"default": {"max_queued": 3}, "callers": {"key:a": {"gpu_classes": ["default"]}}}',
    )
    read = make_settings()
    assert read.caller_limits.for_caller("key:a") == Limits(max_queued=3, gpu_classes=["default"])
    monkeypatch.setenv("COMFYBURST_CALLER_LIMITS", '{"default": {"gpu_classes": ["h100"]}}')
    with pytest.raises(ValidationError, match="caller_limits: unknown GPU classes h100"):
        make_settings()


def _race(admission: Admission, limits: Limits, submits: int, queued: int) -> list[str]:
    """`submits` of one caller at once, each counting `queued` jobs before any commits."""
    counted = threading.Barrier(submits, timeout=30)

    def count() -> int:
        counted.wait()  # every submit counts before any of them checks: the worst race
        return queued

    def submit(_: Any) -> str:
        try:
            with admission.queue_slot("key:a", limits, count):
                return "admitted"
        except QueueFull:
            return "refused"

    with ThreadPoolExecutor(submits) as pool:
        return sorted(pool.map(submit, range(submits)))


def test_racing_submits_of_one_caller_in_one_process_are_not_over_admitted() -> None:
    admission = Admission()
    outcomes = _race(admission, Limits(max_queued=3), submits=5, queued=1)
    assert outcomes.count("admitted") <= 2  # 1 queued + 2 admitted = the limit
    assert outcomes.count("admitted") >= 1
    assert admission.held("key:a") == 0  # every slot is given back


def test_a_caller_without_a_queue_limit_takes_no_slot_and_is_not_counted() -> None:
    admission = Admission()

    def never() -> int:
        raise AssertionError("no limit: nothing to count")

    with admission.queue_slot("key:b", Limits(), never):
        assert admission.held("key:b") == 0


def test_the_openapi_document_names_both_refusals_of_submit() -> None:
    from comfyburst.api.openapi import openapi_document

    responses = openapi_document()["paths"]["/jobs"]["post"]["responses"]
    assert "queue_full" in responses["429"]["description"]
    assert responses["429"]["headers"]["Retry-After"]["schema"]["type"] == "integer"
    assert "gpu_class_forbidden" in responses["403"]["description"]
