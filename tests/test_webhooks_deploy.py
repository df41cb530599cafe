"""Terraform of the webhooks (terraform/webhooks.tf) against the code it deploys: the delivery
function's entry point and settings, the push subscription's retry and dead-letter policies,
the secrets it reads, and who may invoke it."""

from __future__ import annotations

from comfyburst.settings import FunctionSettings
from localcloud.config import FUNCTION_TARGETS
from tests.deploy import hcl


def _one(rtype: str, name: str) -> dict:
    return hcl.resources(rtype)[name]


def test_the_delivery_function_is_the_on_result_cloudevent_target() -> None:
    function = _one("google_cloudfunctions2_function", "on_result")
    assert function["build_config"][0]["entry_point"] == "on_result"
    assert FUNCTION_TARGETS["on_result"] == "cloudevent"
    config = function["service_config"][0]
    assert config["environment_variables"] == "${local.function_env}"
    assert (
        config["service_account_email"] == '${google_service_account.webhooks["on_result"].email}'
    )
    # No Eventarc trigger: the push subscription below is the trigger (its policies apply).
    assert "event_trigger" not in function


def test_secrets_reach_the_settings_that_sign() -> None:
    config = _one("google_cloudfunctions2_function", "on_result")["service_config"][0]
    keys = {config["secret_environment_variables"][0]["key"]}
    keys |= {
        block["content"][0]["key"]
        for block in config.get("dynamic", [])
        if "secret_environment_variables" in block
        for block in [block["secret_environment_variables"]]
    }
    fields = {key.removeprefix("COMFYBURST_").lower() for key in keys}
    assert fields == {"webhook_secret", "webhook_secret_previous"}
    assert fields <= set(FunctionSettings.model_fields)


def test_push_subscription_retries_with_backoff_then_dead_letters() -> None:
    subscription = _one("google_pubsub_subscription", "webhooks")
    assert subscription["topic"] == "${google_pubsub_topic.results.id}"
    push = subscription["push_config"][0]
    uri = "${google_cloudfunctions2_function.on_result[0].service_config[0].uri}"
    assert push["push_endpoint"] == uri
    assert push["oidc_token"][0]["service_account_email"] == (
        '${google_service_account.webhooks["push"].email}'
    )
    retry = subscription["retry_policy"][0]
    assert retry == {
        "minimum_backoff": "${var.webhook_min_backoff_s}s",
        "maximum_backoff": "${var.webhook_max_backoff_s}s",
    }
    dead = subscription["dead_letter_policy"][0]
    assert dead["dead_letter_topic"] == "${google_pubsub_topic.webhooks_dead_letter.id}"
    variables = hcl.variables()
    assert 5 <= variables["webhook_max_delivery_attempts"]["default"] <= 100
    assert variables["webhook_max_backoff_s"]["default"] <= 600
    # The ack deadline outlasts one delivery, so a slow receiver is not raced by a redelivery.
    assert subscription["ack_deadline_seconds"] == "${var.webhook_timeout_s + 30}"


def test_only_the_push_identity_invokes_and_the_pubsub_agent_dead_letters() -> None:
    invoker = _one("google_cloud_run_v2_service_iam_member", "on_result_invoker")
    assert invoker["role"] == "roles/run.invoker"
    assert invoker["member"] == '${google_service_account.webhooks["push"].member}'
    publisher = _one("google_pubsub_topic_iam_member", "webhooks_dead_letter_publisher")
    assert publisher["member"] == "${local.pubsub_agent}"
    subscriber = _one("google_pubsub_subscription_iam_member", "webhooks_dead_letter_subscriber")
    assert subscriber["role"] == "roles/pubsub.subscriber"


def test_the_api_can_hold_its_waiters() -> None:
    config = _one("google_cloudfunctions2_function", "api")["service_config"][0]
    assert config["max_instance_request_concurrency"] == "${var.api_concurrency}"
    assert config["available_cpu"] == "1"
    # The longest wait is 60 s; the request must be allowed longer.
    assert hcl.variables()["api_timeout_s"]["default"] > 60
    functions_tf = (hcl.TERRAFORM / "functions.tf").read_text(encoding="utf-8")
    assert "THREADS = tostring(var.api_concurrency)" in functions_tf  # a thread per request


def test_job_list_queries_have_their_composite_indexes() -> None:
    # FirestoreJobViews.list_page: [caller ==] [state in] created_at range, ordered by
    # created_at then document id, both descending.
    indexes = hcl.locals_()["job_list_indexes"]
    assert sorted(map(tuple, indexes.values())) == [("caller",), ("caller", "state"), ("state",)]
    index = _one("google_firestore_index", "jobs_list")
    orders = [(f["field_path"], f["order"]) for f in index["fields"]]
    assert orders == [("created_at", "DESCENDING"), ("__name__", "DESCENDING")]
    assert index["collection"] == "jobs"


def test_the_subscription_takes_only_results_with_a_webhook() -> None:
    from comfyburst.services.results import WEBHOOK_ATTRIBUTE

    subscription = _one("google_pubsub_subscription", "webhooks")
    # python-hcl2 keeps the string's escapes.
    assert subscription["filter"].replace('\\"', '"') == f'attributes.{WEBHOOK_ATTRIBUTE} = "1"'
