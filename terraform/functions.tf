# The three Cloud Functions (gen2), deployed from a zip of functions/.

locals {
  functions_dir = "${path.module}/../functions"

  # Every COMFYBURST_* setting terraform owns; the rest keep FunctionSettings' defaults
  # unless given in var.function_settings.
  function_env = merge(
    {
      COMFYBURST_PROJECT_ID               = var.project_id
      COMFYBURST_JOBS_BUCKET              = google_storage_bucket.jobs.name
      COMFYBURST_OUTPUTS_BUCKET           = google_storage_bucket.outputs.name
      COMFYBURST_SIGNALS_BUCKET           = google_storage_bucket.signals.name
      COMFYBURST_RESULTS_TOPIC            = google_pubsub_topic.results.name
      COMFYBURST_POOL_LABEL               = "${local.pool_label_key}=${var.pool_name}"
      COMFYBURST_POOL_ZONES               = join(",", local.pool_zones)
      COMFYBURST_GPU_CLASSES              = jsonencode(local.gpu_classes_env)
      COMFYBURST_DEFAULT_GPU_CLASS        = local.default_gpu_class
      COMFYBURST_POOL_NAME_PREFIX         = local.pool_vm_name_prefix
      COMFYBURST_JOB_TTL_DAYS             = tostring(var.job_ttl_days)
      COMFYBURST_HEARTBEAT_INTERVAL_S     = tostring(var.heartbeat_interval_s)
      COMFYBURST_LEASE_TTL_S              = tostring(var.lease_ttl_s)
      COMFYBURST_DRAIN_GRACE_S            = tostring(var.drain_grace_s)
      COMFYBURST_MODEL_HOSTS              = join(",", var.model_hosts)
      COMFYBURST_GS_MODEL_BUCKETS         = join(",", var.gs_model_buckets)
      COMFYBURST_AUTH_MODE                = var.auth_mode
      COMFYBURST_CIVITAI_TOKEN_SECRET     = local.civitai_token_secret
      COMFYBURST_HUGGINGFACE_TOKEN_SECRET = local.huggingface_token_secret
      COMFYBURST_WEBHOOK_TIMEOUT_S        = tostring(var.webhook_timeout_s)
      COMFYBURST_CALLER_LIMITS            = jsonencode(var.caller_limits)
      COMFYBURST_DISPATCH_ORDER           = var.dispatch_order
      # Python functions serve concurrent requests on threads: one per request an instance
      # may hold (the API's waiters; the other functions take one request at a time).
      THREADS = tostring(var.api_concurrency)
    },
    {
      # Environments of custom-node packs (docs/DEPLOY.md): off while the sources are empty.
      COMFYBURST_CUSTOM_NODE_SOURCES                 = join(",", var.custom_node_sources)
      COMFYBURST_TRUSTED_CUSTOM_NODE_SOURCES         = join(",", var.trusted_custom_node_sources)
      COMFYBURST_CUSTOM_NODE_REGISTRY_DOWNLOAD_HOSTS = join(",", var.custom_node_registry_download_hosts)
    },
    var.custom_node_registry_url != null ? {
      COMFYBURST_CUSTOM_NODE_REGISTRY_URL = var.custom_node_registry_url
    } : {},
    var.create_models_bucket ? { COMFYBURST_MODELS_BUCKET = local.models_bucket } : {},
    var.preemption_fallback_class != null ? {
      COMFYBURST_PREEMPTION_FALLBACK_CLASS = var.preemption_fallback_class
    } : {},
    { for key, value in var.function_settings : "COMFYBURST_${upper(key)}" => value },
  )
}

data "archive_file" "functions" {
  type        = "zip"
  source_dir  = local.functions_dir
  output_path = "${path.root}/.terraform/tmp/comfyburst-functions.zip"
  excludes = [
    "**/__pycache__/**",
    "**/*.pyc",
    "*.egg-info/**",
    ".pytest_cache/**",
  ]
}

# The functions' images: the build service account may write here and nowhere else.
resource "google_artifact_registry_repository" "functions" {
  #checkov:skip=CKV_GCP_84:Holds only the functions' images, built from this repo's public code; Google-managed encryption is enough and CMEK adds a KMS key to run.
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-functions"
  format        = "DOCKER"
  description   = "ComfyBurst Cloud Functions images."
  labels        = local.labels

  depends_on = [google_project_service.required]
}

resource "google_storage_bucket_object" "functions_source" {
  # Named by content hash, so a code change redeploys the functions and nothing else does.
  name   = "functions/${data.archive_file.functions.output_md5}.zip"
  bucket = google_storage_bucket.function_source.name
  source = data.archive_file.functions.output_path
}

resource "google_cloudfunctions2_function" "api" {
  #checkov:skip=CKV_GCP_124:Callers are ComfyUI machines outside Google Cloud; Cloud Run still demands an ID token with run.invoker (iam mode) or the function an API key.
  project     = var.project_id
  name        = "${var.name_prefix}-api"
  location    = var.region
  description = "ComfyBurst HTTP API: submit, read and cancel jobs."
  labels      = local.labels

  build_config {
    runtime           = var.functions_runtime
    entry_point       = "api"
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
    available_memory               = "${var.api_memory_mb}Mi"
    timeout_seconds                = var.api_timeout_s
    max_instance_count             = var.api_max_instances
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.sa["api"].email
    environment_variables          = local.function_env

    # Concurrency above 1 needs a whole vCPU; one instance then holds many waiting requests.
    available_cpu                    = "1"
    max_instance_request_concurrency = var.api_concurrency

    dynamic "secret_environment_variables" {
      # Referenced only in api_key mode: Cloud Run refuses a secret without a version.
      for_each = var.auth_mode == "api_key" ? [1] : []
      content {
        key        = "COMFYBURST_API_KEY_HASHES"
        project_id = var.project_id
        secret     = google_secret_manager_secret.api_key_hashes.secret_id
        version    = "latest"
      }
    }
  }

  depends_on = [
    time_sleep.iam_propagation,
    google_storage_bucket_iam_member.grant,
    google_secret_manager_secret_iam_member.api_key_hashes,
  ]
}

resource "google_cloudfunctions2_function" "on_done_flag" {
  project     = var.project_id
  name        = "${var.name_prefix}-on-done-flag"
  location    = var.region
  description = "ComfyBurst done-flag trigger: finalizes a job when its done.json lands."
  labels      = local.labels

  build_config {
    runtime           = var.functions_runtime
    entry_point       = "on_done_flag"
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
    available_memory               = "512Mi"
    timeout_seconds                = var.event_function_timeout_s
    max_instance_count             = 20
    ingress_settings               = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.sa["done"].email
    environment_variables          = local.function_env
  }

  event_trigger {
    trigger_region        = lower(local.storage_location)
    event_type            = "google.cloud.storage.object.v1.finalized"
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.sa["eventarc"].email

    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.signals.name
    }
  }

  depends_on = [
    time_sleep.iam_propagation,
    google_project_iam_member.gcs_agent_publisher,
    google_project_iam_member.eventarc_receiver,
    google_storage_bucket_iam_member.grant,
  ]
}

resource "google_cloudfunctions2_function" "reaper" {
  #checkov:skip=CKV_GCP_124:Cloud Scheduler does not count as internal traffic; Cloud Run still demands its OIDC token, and only the scheduler SA holds run.invoker.
  project     = var.project_id
  name        = "${var.name_prefix}-reaper"
  location    = var.region
  description = "ComfyBurst reaper: stops idle VMs, requeues or times out stuck jobs, dispatches."
  labels      = local.labels

  build_config {
    runtime           = var.functions_runtime
    entry_point       = "reaper"
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
    available_memory               = "512Mi"
    timeout_seconds                = var.reaper_timeout_s
    max_instance_count             = 1 # one sweep at a time
    ingress_settings               = "ALLOW_ALL"
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.sa["reaper"].email
    environment_variables          = local.function_env
  }

  depends_on = [
    time_sleep.iam_propagation,
    google_storage_bucket_iam_member.grant,
  ]
}

# --- Who may invoke what ------------------------------------------------------------------

resource "google_cloud_run_v2_service_iam_member" "api_invokers" {
  for_each = toset(var.auth_mode == "iam" ? var.api_invoker_members : [])

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.api.name
  role     = "roles/run.invoker"
  member   = each.value
}

resource "google_cloud_run_v2_service_iam_member" "api_public" {
  #checkov:skip=CKV_GCP_102:Only in auth_mode api_key, where ComfyUI runs outside Google Cloud without ID tokens and the function checks X-API-Key against hashes in Secret Manager.
  count = var.auth_mode == "api_key" ? 1 : 0

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.api.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_v2_service_iam_member" "done_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.on_done_flag.name
  role     = "roles/run.invoker"
  member   = google_service_account.sa["eventarc"].member
}

resource "google_cloud_run_v2_service_iam_member" "reaper_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.reaper.name
  role     = "roles/run.invoker"
  member   = google_service_account.sa["scheduler"].member
}
