# Secret Manager secrets. Terraform creates them empty: values never enter the state.
# Add versions with `gcloud secrets versions add` (docs/DEPLOY.md).

resource "google_secret_manager_secret" "civitai_token" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-civitai-token"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

resource "google_secret_manager_secret" "huggingface_token" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-huggingface-token"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

# Comma-separated sha256 hex digests of the accepted API keys (auth_mode = "api_key").
resource "google_secret_manager_secret" "api_key_hashes" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-api-key-hashes"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}
