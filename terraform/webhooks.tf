# Webhooks: a push subscription on the results topic feeds the on_result function, which makes
# one signed delivery per message (Standard Webhooks). Retries with exponential backoff and the
# dead-letter topic are the subscription's (Pub/Sub), not the function's: the function answers
# 2xx when the receiver took the result (or there is nothing to deliver) and 5xx otherwise.
#
# Signing secrets live in Secret Manager (values never in the state): add a version to
# `<prefix>-webhook-secret` (`whsec_` + base64 of 24-64 random bytes), then set
# webhooks_enabled. To rotate, put the current value into `<prefix>-webhook-secret-previous`,
# set webhook_rotation = true (deliveries then carry both signatures), add the new version to
# the current secret, apply; once receivers have the new secret, set webhook_rotation = false.

# Account ids are 6-30 characters (the IAM API's CreateServiceAccountRequest): with the longest
# name_prefix (20) the suffix may have 10, so "-wh-send" and "-wh-push" (tests/test_deploy_iam.py).
resource "google_service_account" "webhooks" {
  for_each = {
    on_result = { id = "wh-send", name = "ComfyBurst webhook delivery function" }
    push      = { id = "wh-push", name = "ComfyBurst webhooks subscription (invokes the delivery function)" }
  }

  project      = var.project_id
  account_id   = "${var.name_prefix}-${each.value.id}"
  display_name = each.value.name

  # Service accounts are created through the IAM API, which a new project has off.
  depends_on = [google_project_service.required]
}

resource "google_secret_manager_secret" "webhook_secret" {
  for_each = toset(["current", "previous"])

  project   = var.project_id
  secret_id = each.key == "current" ? "${var.name_prefix}-webhook-secret" : "${var.name_prefix}-webhook-secret-previous"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

resource "google_secret_manager_secret_iam_member" "webhook_secret" {
  for_each = google_secret_manager_secret.webhook_secret

  project   = var.project_id
  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.webhooks["on_result"].member
}

# The delivery function reads the job (its webhook_url) and nothing else.
resource "google_project_iam_member" "webhooks_datastore_viewer" {
  project = var.project_id
  role    = "roles/datastore.viewer"
  member  = google_service_account.webhooks["on_result"].member
}

resource "google_cloudfunctions2_function" "on_result" {
  #checkov:skip=CKV_GCP_124:Pub/Sub push reaches the function over its run.app URL; Cloud Run still demands the push identity's OIDC token, and only that service account holds run.invoker.
  count = var.webhooks_enabled ? 1 : 0

  project     = var.project_id
  name        = "${var.name_prefix}-on-result"
  location    = var.region
  description = "ComfyBurst webhook delivery: one signed POST per result message."
  labels      = local.labels

  build_config {
    runtime           = var.functions_runtime
    entry_point       = "on_result"
    service_account   = google_service_account.sa["build"].id
    docker_repository = google_artifact_registry_repository.functions.id
    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.functions_source.name
      }
    }
  }

  service_config {
    available_memory               = "256Mi"
    timeout_seconds                = var.webhook_timeout_s + 20
    max_instance_count             = var.webhook_max_instances
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.webhooks["on_result"].email
    environment_variables          = local.function_env

    secret_environment_variables {
      key        = "COMFYBURST_WEBHOOK_SECRET"
      project_id = var.project_id
      secret     = google_secret_manager_secret.webhook_secret["current"].secret_id
      version    = "latest"
    }

    dynamic "secret_environment_variables" {
      # Only while rotating: Cloud Run refuses a secret without a version.
      for_each = var.webhook_rotation ? [1] : []
      content {
        key        = "COMFYBURST_WEBHOOK_SECRET_PREVIOUS"
        project_id = var.project_id
        secret     = google_secret_manager_secret.webhook_secret["previous"].secret_id
        version    = "latest"
      }
    }
  }

  depends_on = [
    time_sleep.iam_propagation,
    google_secret_manager_secret_iam_member.webhook_secret,
    google_project_iam_member.webhooks_datastore_viewer,
  ]
}

resource "google_cloud_run_v2_service_iam_member" "on_result_invoker" {
  count = var.webhooks_enabled ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.on_result[0].name
  role     = "roles/run.invoker"
  member   = google_service_account.webhooks["push"].member
}

resource "google_pubsub_topic" "webhooks_dead_letter" {
  #checkov:skip=CKV_GCP_83:Holds the same messages as the results topic; see pubsub.tf.
  project = var.project_id
  name    = "${var.name_prefix}-webhooks-dead-letter"
  labels  = local.labels

  depends_on = [google_project_service.required]
}

# Undeliverable webhooks stay readable here for inspection and replay.
resource "google_pubsub_subscription" "webhooks_dead_letter" {
  project                    = var.project_id
  name                       = "${var.name_prefix}-webhooks-dead-letter"
  topic                      = google_pubsub_topic.webhooks_dead_letter.id
  message_retention_duration = "${var.results_retention_s}s"
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "webhooks" {
  count = var.webhooks_enabled ? 1 : 0

  project = var.project_id
  name    = "${var.name_prefix}-webhooks"
  topic   = google_pubsub_topic.results.id
  # Only results of jobs that have a webhook_url (services/results.py WEBHOOK_ATTRIBUTE).
  filter = "attributes.webhook = \"1\""
  # Longer than the function may take for one delivery, so a slow receiver is not raced.
  ack_deadline_seconds       = var.webhook_timeout_s + 30
  message_retention_duration = "${var.results_retention_s}s"
  labels                     = local.labels

  push_config {
    push_endpoint = google_cloudfunctions2_function.on_result[0].service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.webhooks["push"].email
      audience              = google_cloudfunctions2_function.on_result[0].service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "${var.webhook_min_backoff_s}s"
    maximum_backoff = "${var.webhook_max_backoff_s}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.webhooks_dead_letter.id
    max_delivery_attempts = var.webhook_max_delivery_attempts
  }

  expiration_policy {
    ttl = ""
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.on_result_invoker,
    google_pubsub_topic_iam_member.webhooks_dead_letter_publisher,
  ]
}

# The Pub/Sub service agent forwards undeliverable messages and acks them on the source.
resource "google_pubsub_topic_iam_member" "webhooks_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.webhooks_dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "webhooks_dead_letter_subscriber" {
  count = var.webhooks_enabled ? 1 : 0

  project      = var.project_id
  subscription = google_pubsub_subscription.webhooks[0].name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
