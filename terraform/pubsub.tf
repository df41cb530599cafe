# Results topic, its subscription and the dead-letter topic for undeliverable results.

resource "google_pubsub_topic" "results" {
  #checkov:skip=CKV_GCP_83:Result messages carry job ids and signed URLs that expire; Google-managed encryption is enough and CMEK adds a KMS key to run.
  project = var.project_id
  name    = "${var.name_prefix}-results"
  labels  = local.labels

  depends_on = [google_project_service.required]
}

resource "google_pubsub_topic" "results_dead_letter" {
  #checkov:skip=CKV_GCP_83:Holds the same messages as the results topic; see there.
  project = var.project_id
  name    = "${var.name_prefix}-results-dead-letter"
  labels  = local.labels

  depends_on = [google_project_service.required]
}

resource "google_pubsub_subscription" "results" {
  project                    = var.project_id
  name                       = "${var.name_prefix}-results"
  topic                      = google_pubsub_topic.results.id
  ack_deadline_seconds       = var.results_ack_deadline_s
  message_retention_duration = "${var.results_retention_s}s"
  labels                     = local.labels

  expiration_policy {
    ttl = "" # never expires while unused
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.results_dead_letter.id
    max_delivery_attempts = var.results_max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
}

# Keeps dead-lettered results readable for inspection and replay.
resource "google_pubsub_subscription" "results_dead_letter" {
  project                    = var.project_id
  name                       = "${var.name_prefix}-results-dead-letter"
  topic                      = google_pubsub_topic.results_dead_letter.id
  message_retention_duration = "${var.results_retention_s}s"
  labels                     = local.labels

  expiration_policy {
    ttl = ""
  }
}

# The Pub/Sub service agent moves messages to the dead-letter topic; iam.tf makes sure it exists.
locals {
  pubsub_agent = google_project_service_identity.agent["pubsub.googleapis.com"].member
}

resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.results_dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.results.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
