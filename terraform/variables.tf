# Inputs of the ComfyBurst root module. Units are in the names (_s, _days, _gb, _mb).

variable "project_id" {
  type        = string
  description = "Google Cloud project that holds the whole deployment."
}

variable "region" {
  type        = string
  description = "Region of the functions, buckets, Scheduler job and the GPU pool's subnet."
  default     = "us-central1"
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name; bucket names are '<project_id>-<name_prefix>-<purpose>'."
  default     = "comfyburst"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,18}[a-z0-9]$", var.name_prefix))
    error_message = "name_prefix must be 3-20 characters: lowercase letters, digits and hyphens."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels added to every labelled resource."
  default     = {}
}

variable "enable_apis" {
  type        = bool
  description = "Enable the Google APIs the deployment needs (turn off when the project is managed elsewhere)."
  default     = true
}

# --- Storage -------------------------------------------------------------------------------

variable "storage_location" {
  type        = string
  description = "Location of the buckets; defaults to the region."
  default     = null
}

variable "jobs_retention_days" {
  type        = number
  description = "Days after which requests and inputs in the jobs bucket are deleted (catalogue/ is kept)."
  default     = 30
}

variable "outputs_retention_days" {
  type        = number
  description = "Days after which rendered outputs are deleted."
  default     = 30
}

variable "signals_retention_days" {
  type        = number
  description = "Days after which done flags are deleted."
  default     = 30
}

variable "models_retention_days" {
  type        = number
  description = "Days after which mirrored models are deleted; 0 keeps them forever."
  default     = 0
}

variable "function_source_retention_days" {
  type        = number
  description = "Days after which old function source zips are deleted (deployed functions keep their built image)."
  default     = 90
}

variable "create_models_bucket" {
  type        = bool
  description = "Create the models mirror bucket, so VMs pull models from GCS instead of Civitai / Hugging Face."
  default     = true
}

variable "force_destroy_buckets" {
  type        = bool
  description = "Let terraform destroy delete non-empty buckets (for throwaway deployments)."
  default     = false
}

# --- Firestore ---------------------------------------------------------------------------

variable "firestore_location" {
  type        = string
  description = "Firestore location (a region or multi-region such as nam5). Fixed once created."
  default     = "nam5"
}

variable "create_firestore_database" {
  type        = bool
  description = "Create the (default) Firestore database; false when the project already has one in native mode."
  default     = true
}

variable "job_ttl_days" {
  type        = number
  description = "Days after which job documents expire (Firestore TTL on expire_at)."
  default     = 30
}

# --- Pub/Sub -----------------------------------------------------------------------------

variable "results_retention_s" {
  type        = number
  description = "How long the results subscription keeps unacknowledged messages, in seconds."
  default     = 604800
}

variable "results_ack_deadline_s" {
  type        = number
  description = "Ack deadline of the results subscription, in seconds."
  default     = 60
}

variable "results_max_delivery_attempts" {
  type        = number
  description = "Deliveries of a result message before it goes to the dead-letter topic (5-100)."
  default     = 10
}

# --- Functions ---------------------------------------------------------------------------

variable "functions_runtime" {
  type        = string
  description = "Cloud Functions (gen2) Python runtime."
  default     = "python312"
}

variable "api_memory_mb" {
  type        = number
  description = "Memory of the API function, in MiB."
  default     = 512
}

variable "api_timeout_s" {
  type        = number
  description = "Request timeout of the API function, in seconds (above 60: GET /jobs/{id}?wait_s waits up to 60)."
  default     = 90
}

variable "api_max_instances" {
  type        = number
  description = "Maximum instances of the API function."
  default     = 10
}

variable "caller_limits" {
  type = object({
    default = optional(object({
      max_queued         = optional(number)
      max_running        = optional(number)
      gpu_classes        = optional(list(string))
      monthly_budget_usd = optional(number)
      max_environments   = optional(number)
    }), {})
    callers = optional(map(object({
      max_queued         = optional(number)
      max_running        = optional(number)
      gpu_classes        = optional(list(string))
      monthly_budget_usd = optional(number)
      max_environments   = optional(number)
    })), {})
  })
  description = "Per-caller limits (docs/DEPLOY.md): default = {max_queued, max_running, gpu_classes, monthly_budget_usd, max_environments} for every caller, callers = {principal (key:NAME or an ID token's email) => the same fields}; a field a caller leaves out (null) is the default's; null in the default: no limit, every class. Beyond max_queued a submit answers 429 queue_full; at max_running (jobs starting or running at once) the caller's further jobs wait queued while other callers' start; once the caller's receipts this month (UTC) reach monthly_budget_usd its submits answer 403 budget_exceeded (running jobs go on); once it has asked for max_environments environments of custom-node packs, asking for a new one answers 403 environment_limit_reached (its own ones still answer)."
  default     = {}

  validation {
    condition = alltrue([
      for entry in concat([var.caller_limits.default], values(var.caller_limits.callers)) :
      coalesce(entry.max_queued, 0) >= 0 && floor(coalesce(entry.max_queued, 0)) == coalesce(entry.max_queued, 0)
    ])
    error_message = "caller_limits: max_queued must be a whole number >= 0."
  }

  validation {
    condition = alltrue([
      for entry in concat([var.caller_limits.default], values(var.caller_limits.callers)) :
      coalesce(entry.max_running, 1) >= 1 && floor(coalesce(entry.max_running, 1)) == coalesce(entry.max_running, 1)
    ])
    error_message = "caller_limits: max_running must be a whole number >= 1."
  }

  validation {
    condition = alltrue([
      for entry in concat([var.caller_limits.default], values(var.caller_limits.callers)) :
      coalesce(entry.max_environments, 0) >= 0 && floor(coalesce(entry.max_environments, 0)) == coalesce(entry.max_environments, 0)
    ])
    error_message = "caller_limits: max_environments must be a whole number >= 0."
  }

  validation {
    condition = alltrue([
      for entry in concat([var.caller_limits.default], values(var.caller_limits.callers)) :
      coalesce(entry.monthly_budget_usd, 0) >= 0
    ])
    error_message = "caller_limits: monthly_budget_usd must be a number of USD >= 0."
  }

  validation {
    # A budget sums the month's job documents: they must outlive a month (31 days + a run).
    condition = alltrue([
      for entry in concat([var.caller_limits.default], values(var.caller_limits.callers)) :
      entry.monthly_budget_usd == null || var.job_ttl_days >= 32
    ])
    error_message = "caller_limits: monthly_budget_usd needs job_ttl_days >= 32, so a whole month of job documents (whose receipts the budget sums) is kept."
  }

  validation {
    condition = alltrue([
      for principal in keys(var.caller_limits.callers) :
      length(trimspace(principal)) > 0 && length(principal) <= 512
    ])
    error_message = "caller_limits: each principal in callers is key:NAME or an email (1-512 characters)."
  }

  validation {
    # The classes the functions know: var.gpu_classes, else the one class "default".
    condition = alltrue([
      for name in flatten([
        for entry in concat([var.caller_limits.default], values(var.caller_limits.callers)) :
        entry.gpu_classes == null ? [] : entry.gpu_classes
      ]) : contains(var.gpu_classes == null ? ["default"] : keys(var.gpu_classes), name)
    ])
    error_message = "caller_limits: gpu_classes may name only declared GPU classes (\"default\" when gpu_classes is null)."
  }
}

variable "dispatch_order" {
  type        = string
  description = "Which queued job of a GPU class starts next: \"fair\" (fair share between callers: the caller with the fewest jobs running goes first) or \"fifo\" (the oldest job, whoever's; kept to compare the two). The reaper and the draining workers both follow it."
  default     = "fair"

  validation {
    condition     = contains(["fair", "fifo"], var.dispatch_order)
    error_message = "dispatch_order must be \"fair\" or \"fifo\"."
  }
}

variable "api_invoker_members" {
  type        = list(string)
  description = "IAM members allowed to call the API in iam auth mode, e.g. [\"user:me@example.com\"]."
  default     = []

  validation {
    # The API owns jobs by the ID token Cloud Run verified; public invocation verifies none.
    condition     = !contains(var.api_invoker_members, "allUsers")
    error_message = "api_invoker_members must not hold allUsers: callers are told apart by the ID token Cloud Run verifies (use auth_mode api_key for keyed public access)."
  }
}

variable "auth_mode" {
  type        = string
  description = "API authentication: 'iam' (Cloud Run checks a Google ID token) or 'api_key' (public endpoint, X-API-Key checked against hashes in Secret Manager)."
  default     = "iam"

  validation {
    condition     = contains(["iam", "api_key"], var.auth_mode)
    error_message = "auth_mode must be 'iam' or 'api_key'."
  }
}

variable "event_function_timeout_s" {
  type        = number
  description = "Timeout of the done-flag trigger function, in seconds (event functions allow at most 540)."
  default     = 120
}

variable "reaper_timeout_s" {
  type        = number
  description = "Timeout of the reaper function, in seconds."
  default     = 120
}

variable "reaper_schedule" {
  type        = string
  description = "Cron schedule of the reaper (Cloud Scheduler syntax)."
  default     = "* * * * *"
}

variable "scheduler_time_zone" {
  type        = string
  description = "Time zone of the reaper schedule."
  default     = "Etc/UTC"
}

variable "function_settings" {
  type        = map(string)
  description = "Extra COMFYBURST_* settings for the functions, keyed by the setting's name without prefix (e.g. { boot_timeout_s = \"900\" })."
  default     = {}
}

# --- GPU pool ----------------------------------------------------------------------------
# The gpu_* variables below describe the one class ("default") of a deployment whose
# gpu_classes (gpu_classes.tf) is null; with gpu_classes set, only gpu_image_family and
# gpu_image_project_id apply.

variable "pool_name" {
  type        = string
  description = "Value of the comfyburst-pool label the dispatcher selects VMs by."
  default     = "default"
}

variable "gpu_max_vms" {
  type        = number
  description = "Most GPU VMs the dispatcher keeps (created on demand from the template; stopped ones count)."
  default     = 8
}

variable "gpu_max_vms_per_zone" {
  type        = number
  description = "Most GPU VMs the dispatcher creates in any one zone."
  default     = 4
}

variable "gpu_zones" {
  type        = list(string)
  description = "Zones the dispatcher may create GPU VMs in, most preferred first (a zone outside var.region needs its region in subnet_cidrs)."
  default     = ["us-central1-a", "us-central1-b", "us-central1-c"]

  validation {
    condition = length(var.gpu_zones) > 0 && alltrue([
      for zone in var.gpu_zones : can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", zone))
    ])
    error_message = "gpu_zones must list zone names such as \"us-central1-a\"."
  }
}

variable "gpu_machine_type" {
  type        = string
  description = "Machine type of the GPU VMs."
  default     = "n1-standard-8"
}

variable "gpu_accelerator_type" {
  type        = string
  description = "Accelerator type attached to each VM (ignored when gpu_accelerator_count is 0, e.g. for g2/a2 machine types that bring their GPU)."
  default     = "nvidia-tesla-t4"
}

variable "gpu_accelerator_count" {
  type        = number
  description = "Accelerators per VM; 0 for machine types with built-in GPUs (g2, a2, a3)."
  default     = 1
}

variable "gpu_image_family" {
  type        = string
  description = "Image family baked by gpu_image/ (packer build)."
  default     = "comfyburst-gpu"
}

variable "gpu_image_project_id" {
  type        = string
  description = "Project holding the image family; defaults to project_id."
  default     = null
}

variable "gpu_boot_disk_size_gb" {
  type        = number
  description = "Boot disk size in GB; it holds the model cache, which survives stop/start. At least gpu_image_disk_size_gb."
  default     = 200

  validation {
    condition     = var.gpu_boot_disk_size_gb >= var.gpu_image_disk_size_gb
    error_message = "gpu_boot_disk_size_gb must be at least the baked image's size (gpu_image_disk_size_gb = ${var.gpu_image_disk_size_gb} GB): Compute refuses a boot disk smaller than its image (\"Requested disk size cannot be smaller than the image size\")."
  }
}

variable "gpu_image_disk_size_gb" {
  type        = number
  description = "Disk size in GB of the baked image (gpu_image/ variable disk_size_gb, 100 by default): the smallest boot disk Compute creates from it."
  default     = 100
}

variable "gpu_boot_disk_type" {
  type        = string
  description = "Boot disk type of the GPU VMs."
  default     = "pd-balanced"
}

variable "gpu_spot" {
  type        = bool
  description = "Use Spot VMs (cheaper, preemptible; the reaper requeues preempted jobs)."
  default     = false
}

variable "subnet_cidr" {
  type        = string
  description = "CIDR range of the GPU pool's subnet."
  default     = "10.80.0.0/24"
}

variable "allow_iap_ssh" {
  type        = bool
  description = "Allow SSH to the GPU VMs through Identity-Aware Proxy (for debugging)."
  default     = false
}

# --- Worker ------------------------------------------------------------------------------

variable "heartbeat_interval_s" {
  type        = number
  description = "Seconds between the worker's heartbeats."
  default     = 5
}

variable "lease_ttl_s" {
  type        = number
  description = "Lifetime of a VM lease, in seconds."
  default     = 900
}

variable "drain_grace_s" {
  type        = number
  description = "Seconds a worker waits for another queued job before shutting its VM down."
  default     = 30
}

variable "model_hosts" {
  type        = list(string)
  description = "Hosts model URLs may point to (https)."
  default     = ["civitai.com", "huggingface.co", "storage.googleapis.com"]
}

variable "gs_model_buckets" {
  type        = list(string)
  description = "Extra buckets gs:// model URLs may point to (the models bucket is always allowed)."
  default     = []
}

variable "custom_node_sources" {
  type        = list(string)
  description = "Custom-node packs environments may build: HOST, HOST/OWNER, HOST/OWNER/REPO, registry:ID or registry:* (empty: environments are off)."
  default     = []

  validation {
    condition = alltrue([
      for entry in var.custom_node_sources :
      can(regex("^(registry:([*]|[A-Za-z0-9][A-Za-z0-9_.-]*)|[A-Za-z0-9.-]+(/[A-Za-z0-9_.-]+){0,7})$", entry))
    ])
    error_message = "Each entry is HOST, HOST/OWNER, HOST/OWNER/REPO (no https://), registry:ID or registry:*."
  }
}

variable "trusted_custom_node_sources" {
  type        = list(string)
  description = "Sources whose packs make shared environments; an environment with any other pack is private to its creator (same forms as custom_node_sources)."
  default     = []

  validation {
    condition = alltrue([
      for entry in var.trusted_custom_node_sources :
      can(regex("^(registry:([*]|[A-Za-z0-9][A-Za-z0-9_.-]*)|[A-Za-z0-9.-]+(/[A-Za-z0-9_.-]+){0,7})$", entry))
    ])
    error_message = "Each entry is HOST, HOST/OWNER, HOST/OWNER/REPO (no https://), registry:ID or registry:*."
  }
}

variable "custom_node_registry_url" {
  type        = string
  description = "Base URL of the Comfy registry's API that registry packs (ID@VERSION) are fetched from (null: registry packs are refused)."
  default     = null

  validation {
    condition     = var.custom_node_registry_url == null || can(regex("^https://[A-Za-z0-9.-]+(/[^?#]*)?$", var.custom_node_registry_url))
    error_message = "custom_node_registry_url is an https:// URL without port, query or fragment."
  }
}

variable "custom_node_registry_download_hosts" {
  type        = list(string)
  description = "Hosts (and subdomains) the registry's pack archives may be downloaded from over https, redirects included."
  default     = []
}

# --- Webhooks (webhooks.tf) --------------------------------------------------------------------

variable "webhooks_enabled" {
  type        = bool
  description = "Deploy the webhook delivery function and its subscription (add a version to the webhook secret first)."
  default     = false
}

variable "webhook_rotation" {
  type        = bool
  description = "Sign with the previous webhook secret too (while receivers switch to the new one)."
  default     = false
}

variable "webhook_timeout_s" {
  type        = number
  description = "How long a webhook receiver may take to answer, in seconds."
  default     = 10
}

variable "webhook_max_instances" {
  type        = number
  description = "Maximum instances of the webhook delivery function."
  default     = 10
}

variable "webhook_min_backoff_s" {
  type        = number
  description = "First retry delay of an undelivered webhook, in seconds (Pub/Sub retry policy, 0-600)."
  default     = 10
}

variable "webhook_max_backoff_s" {
  type        = number
  description = "Longest retry delay of an undelivered webhook, in seconds (Pub/Sub retry policy, 0-600)."
  default     = 600
}

variable "webhook_max_delivery_attempts" {
  type        = number
  description = "Delivery attempts of a webhook before it goes to the webhooks dead-letter topic (5-100)."
  default     = 10
}

variable "api_concurrency" {
  type        = number
  description = "Requests one API instance serves at once (waiting GET /jobs/{id}?wait_s requests mostly idle)."
  default     = 80
}

variable "alert_notification_channels" {
  type        = list(string)
  description = "Notification channel ids (projects/P/notificationChannels/N) the monitoring alert policies notify; empty: incidents only show in the console."
  default     = []
}

variable "stuck_job_alert_after_s" {
  type        = number
  description = "Seconds a job must stay live past its deadline before the stuck-job alert opens."
  default     = 600
}

variable "idle_vm_alert_after_s" {
  type        = number
  description = "Seconds a pool VM must run with no job or draining worker holding it before the alert opens."
  default     = 900
}
