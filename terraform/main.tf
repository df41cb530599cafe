# ComfyBurst root module: shared names and the APIs everything else needs.

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  storage_location  = coalesce(var.storage_location, var.region)
  gpu_image_project = coalesce(var.gpu_image_project_id, var.project_id)
  bucket_prefix     = "${var.project_id}-${var.name_prefix}"
  pool_label_key    = "comfyburst-pool"
  # The pool's VMs are "<this>-<hash>" (domain/scheduling.vm_name); iam.tf's grants name them.
  pool_vm_name_prefix = "${var.name_prefix}-gpu"

  labels = merge(var.labels, {
    "app"                = "comfyburst"
    "comfyburst-release" = var.name_prefix
  })

  # Model-host tokens live in Secret Manager; VMs get the secrets' resource names only.
  civitai_token_secret     = google_secret_manager_secret.civitai_token.id
  huggingface_token_secret = google_secret_manager_secret.huggingface_token.id

  # DeploymentConfig (functions/comfyburst/schema.py) as first written into each VM's metadata;
  # the dispatcher rewrites it from the functions' settings before every start.
  deployment_config = {
    schema_version            = 1
    project_id                = var.project_id
    jobs_bucket               = google_storage_bucket.jobs.name
    outputs_bucket            = google_storage_bucket.outputs.name
    signals_bucket            = google_storage_bucket.signals.name
    models_bucket             = local.models_bucket
    heartbeat_interval_s      = var.heartbeat_interval_s
    lease_ttl_s               = var.lease_ttl_s
    drain_grace_s             = var.drain_grace_s
    default_gpu_class         = local.default_gpu_class
    preemption_fallback_class = var.preemption_fallback_class
    model_hosts               = var.model_hosts
    gs_model_buckets          = local.gs_model_buckets
    civitai_token_secret      = local.civitai_token_secret
    huggingface_token_secret  = local.huggingface_token_secret
  }
}

locals {
  required_apis = [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "compute.googleapis.com",
    "eventarc.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iap.googleapis.com", # the image build's SSH tunnel and allow_iap_ssh
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com", # monitoring.tf: dashboard and alert policies
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ]
}

resource "google_project_service" "required" {
  for_each = var.enable_apis ? toset(local.required_apis) : toset([])

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}
