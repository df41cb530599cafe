# Buckets: one per trigger concern (the Eventarc storage trigger filters by bucket only).

locals {
  models_bucket    = var.create_models_bucket ? google_storage_bucket.models[0].name : null
  gs_model_buckets = distinct(concat(var.gs_model_buckets, compact([local.models_bucket])))
}

resource "google_storage_bucket" "jobs" {
  #checkov:skip=CKV_GCP_62:Access logs of short-lived job requests add cost and no signal; Cloud Audit Logs cover data access.
  #checkov:skip=CKV_GCP_78:Requests and inputs are written once and expire; versions would only keep deleted data longer.
  project                     = var.project_id
  name                        = "${local.bucket_prefix}-jobs"
  location                    = local.storage_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels                      = local.labels

  lifecycle_rule {
    condition {
      age            = var.jobs_retention_days
      matches_prefix = ["jobs/"]
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.required]
}

resource "google_storage_bucket" "outputs" {
  #checkov:skip=CKV_GCP_62:Outputs are read through signed URLs that are logged by Cloud Audit Logs when enabled; bucket access logs add cost.
  #checkov:skip=CKV_GCP_78:Outputs are written once per job and expire; versions would only keep deleted data longer.
  project                     = var.project_id
  name                        = "${local.bucket_prefix}-outputs"
  location                    = local.storage_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels                      = local.labels

  lifecycle_rule {
    condition {
      age = var.outputs_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.required]
}

resource "google_storage_bucket" "signals" {
  #checkov:skip=CKV_GCP_62:Done flags are tiny, short-lived objects; every write is already an Eventarc event.
  #checkov:skip=CKV_GCP_78:A done flag is written once; versioning would keep deleted flags without use.
  project                     = var.project_id
  name                        = "${local.bucket_prefix}-signals"
  location                    = local.storage_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels                      = local.labels

  lifecycle_rule {
    condition {
      age = var.signals_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.required]
}

resource "google_storage_bucket" "models" {
  #checkov:skip=CKV_GCP_62:The model mirror holds public model files; access logs add cost and no signal.
  #checkov:skip=CKV_GCP_78:Mirrored models are re-downloadable copies keyed by sha256; versions would double large objects.
  count = var.create_models_bucket ? 1 : 0

  project                     = var.project_id
  name                        = "${local.bucket_prefix}-models"
  location                    = local.storage_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy_buckets
  labels                      = local.labels

  dynamic "lifecycle_rule" {
    for_each = var.models_retention_days > 0 ? [var.models_retention_days] : []
    content {
      condition {
        age = lifecycle_rule.value
      }
      action {
        type = "Delete"
      }
    }
  }

  depends_on = [google_project_service.required]
}

resource "google_storage_bucket" "function_source" {
  #checkov:skip=CKV_GCP_62:Holds only the functions' source zips; access logs add cost and no signal.
  #checkov:skip=CKV_GCP_78:Each source zip is named by its content hash, so objects are never overwritten.
  # "-functions": the longest project id (30) and name_prefix (20) keep it within 63 characters.
  project                     = var.project_id
  name                        = "${local.bucket_prefix}-functions"
  location                    = local.storage_location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = local.labels

  lifecycle_rule {
    condition {
      age = var.function_source_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.required]
}
