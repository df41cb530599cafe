# One service account per component, each with only what its code does.

locals {
  service_accounts = {
    api       = "ComfyBurst API function"
    done      = "ComfyBurst done-flag trigger function"
    reaper    = "ComfyBurst reaper function"
    worker    = "ComfyBurst GPU worker VMs"
    eventarc  = "ComfyBurst Eventarc trigger (invokes the done-flag function)"
    scheduler = "ComfyBurst Cloud Scheduler (invokes the reaper)"
    build     = "ComfyBurst functions build (Cloud Build for the functions)"
    imager    = "ComfyBurst image build VM (packer)"
  }

  # Exactly functions/comfyburst/permissions.py COMPUTE_PERMISSIONS (tests/test_deploy_wiring.py).
  dispatcher_compute_permissions = [
    "compute.instances.get",
    "compute.instances.list",
    "compute.instances.setMetadata",
    "compute.instances.start",
    "compute.instances.stop",
    "compute.zoneOperations.get",
    "compute.instances.create",
    "compute.instances.delete",
    "compute.instanceTemplates.useReadOnly",
    "compute.disks.create",
    "compute.images.useReadOnly",
    "compute.subnetworks.use",
    "compute.instances.setLabels",
    "compute.instances.setServiceAccount",
    "compute.instances.setTags",
  ]

  # The API places jobs (start, create, write a stale config) and never stops or deletes a VM:
  # only the reaper does (services/reap.py, services/prune.py).
  reaper_only_compute_permissions = ["compute.instances.delete", "compute.instances.stop"]
  api_compute_permissions = [
    for p in local.dispatcher_compute_permissions : p
    if !contains(local.reaper_only_compute_permissions, p)
  ]

  dispatchers = ["api", "reaper"]
  signers     = ["api", "done", "reaper"] # the reaper completes jobs from late done flags
  publishers  = ["api", "done", "reaper"]
}

resource "google_service_account" "sa" {
  for_each = local.service_accounts

  project      = var.project_id
  account_id   = "${var.name_prefix}-${each.key}"
  display_name = each.value

  depends_on = [google_project_service.required]
}

# --- Dispatch: the API and the reaper start, stop and configure pool VMs -------------------

# The reaper's role: every permission ComputeFleet uses (functions/comfyburst/permissions.py).
resource "google_project_iam_custom_role" "dispatcher" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_dispatcher"
  title       = "ComfyBurst dispatcher (reaper)"
  description = "The compute permissions ComputeFleet uses to run the GPU pool."
  permissions = local.dispatcher_compute_permissions

  # Custom roles are created through the IAM API, which a new project has off.
  depends_on = [google_project_service.required]
}

# The API's role: the same without stop and delete.
resource "google_project_iam_custom_role" "api_dispatcher" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_api_dispatcher"
  title       = "ComfyBurst API dispatcher"
  description = "Starts, creates and configures GPU pool VMs; never stops or deletes one."
  permissions = local.api_compute_permissions

  depends_on = [google_project_service.required]
}

# On the project, so one grant covers the templates, subnets and zones of every class in every
# region; conditioned on the pool's VM names. Google's resource-based access guide ("Match
# Compute Engine VMs in any location"): a VM's resource name is
# projects/PROJECT/zones/ZONE/instances/NAME, and the resource.type clause keeps the role's
# other permissions (templates, disks, images, subnets, and the list and zone-operation
# permissions, checked on the project or zone) unconditioned. The pool's VMs are named
# "<pool_vm_name_prefix>-<hash>" (COMFYBURST_POOL_NAME_PREFIX, domain/scheduling.vm_name).
resource "google_project_iam_member" "dispatcher" {
  for_each = {
    api    = google_project_iam_custom_role.api_dispatcher.id
    reaper = google_project_iam_custom_role.dispatcher.id
  }

  project = var.project_id
  role    = each.value
  member  = google_service_account.sa[each.key].member

  condition {
    title       = "comfyburst-pool-vms-only"
    description = "Compute Engine VMs named ${local.pool_vm_name_prefix}-*; other resource types as the role says"
    expression  = "resource.type != \"compute.googleapis.com/Instance\" || resource.name.extract(\"/instances/{name}\").startsWith(\"${local.pool_vm_name_prefix}-\")"
  }
}

# The done-flag trigger reads its job's VM once, for Compute's lastStartTimestamp (the
# receipt's RUNNING, services/complete.py): that one read permission, nothing that changes a VM.
resource "google_project_iam_custom_role" "vm_reader" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_vm_reader"
  title       = "ComfyBurst VM reader"
  description = "Reads a GPU VM's lastStartTimestamp for the job's receipt."
  permissions = ["compute.instances.get"]

  depends_on = [google_project_service.required]
}

resource "google_project_iam_member" "done_reads_vms" {
  project = var.project_id
  role    = google_project_iam_custom_role.vm_reader.id
  member  = google_service_account.sa["done"].member
}

# setMetadata/start of a VM that runs as the worker SA needs actAs on that SA, granted there only.
resource "google_service_account_iam_member" "dispatcher_acts_as_worker" {
  for_each = toset(local.dispatchers)

  service_account_id = google_service_account.sa["worker"].name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.sa[each.key].member
}

# --- Signed URLs without a key: signBlob on itself ------------------------------------------

resource "google_service_account_iam_member" "self_signer" {
  for_each = toset(local.signers)

  service_account_id = google_service_account.sa[each.key].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.sa[each.key].member
}

# --- Firestore -----------------------------------------------------------------------------

resource "google_project_iam_member" "datastore_user" {
  for_each = toset(["api", "done", "reaper", "worker"])

  project = var.project_id
  role    = "roles/datastore.user"
  member  = google_service_account.sa[each.key].member
}

# --- Pub/Sub -------------------------------------------------------------------------------

resource "google_pubsub_topic_iam_member" "results_publisher" {
  for_each = toset(local.publishers)

  project = var.project_id
  topic   = google_pubsub_topic.results.name
  role    = "roles/pubsub.publisher"
  member  = google_service_account.sa[each.key].member
}

# --- Buckets -------------------------------------------------------------------------------

locals {
  bucket_grants = {
    # The API writes request.json and inputs and reads the node catalogue.
    "api-jobs" = { sa = "api", bucket = google_storage_bucket.jobs.name, role = "roles/storage.objectAdmin" }
    # Signed GET URLs act with the signer's rights.
    "api-outputs"    = { sa = "api", bucket = google_storage_bucket.outputs.name, role = "roles/storage.objectViewer" }
    "done-signals"   = { sa = "done", bucket = google_storage_bucket.signals.name, role = "roles/storage.objectViewer" }
    "done-outputs"   = { sa = "done", bucket = google_storage_bucket.outputs.name, role = "roles/storage.objectViewer" }
    "reaper-signals" = { sa = "reaper", bucket = google_storage_bucket.signals.name, role = "roles/storage.objectViewer" }
    "reaper-outputs" = { sa = "reaper", bucket = google_storage_bucket.outputs.name, role = "roles/storage.objectViewer" }
    "worker-jobs"    = { sa = "worker", bucket = google_storage_bucket.jobs.name, role = "roles/storage.objectViewer" }
    "worker-outputs" = { sa = "worker", bucket = google_storage_bucket.outputs.name, role = "roles/storage.objectAdmin" }
    "worker-signals" = { sa = "worker", bucket = google_storage_bucket.signals.name, role = "roles/storage.objectAdmin" }
    # The functions' build: Storage Object Admin on its source bucket (see functions_builder_sources).
    "build-source" = { sa = "build", bucket = google_storage_bucket.function_source.name, role = "roles/storage.objectAdmin" }
  }
  models_grants = var.create_models_bucket ? {
    # The worker mirrors downloaded models so the next VM pulls them at line rate.
    "worker-models" = { sa = "worker", bucket = google_storage_bucket.models[0].name, role = "roles/storage.objectAdmin" }
  } : {}
}

resource "google_storage_bucket_iam_member" "grant" {
  for_each = merge(local.bucket_grants, local.models_grants)

  bucket = each.value.bucket
  role   = each.value.role
  member = google_service_account.sa[each.value.sa].member
}

# The image build uploads the node catalogue, and may write nothing else.
resource "google_storage_bucket_iam_member" "imager_catalogue" {
  bucket = google_storage_bucket.jobs.name
  role   = "roles/storage.objectAdmin"
  member = google_service_account.sa["imager"].member

  condition {
    title      = "catalogue-only"
    expression = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.jobs.name}/objects/catalogue/\")"
  }
}

# --- Secrets -------------------------------------------------------------------------------

resource "google_secret_manager_secret_iam_member" "worker_model_tokens" {
  for_each = {
    civitai     = google_secret_manager_secret.civitai_token.id
    huggingface = google_secret_manager_secret.huggingface_token.id
  }

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.sa["worker"].member
}

resource "google_secret_manager_secret_iam_member" "api_key_hashes" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.api_key_hashes.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.sa["api"].member
}

# --- Logs and metrics from the VMs and builds -----------------------------------------------

resource "google_project_iam_member" "log_writer" {
  for_each = toset(["worker", "imager", "build"])

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = google_service_account.sa[each.key].member
}

resource "google_project_iam_member" "metric_writer" {
  for_each = toset(["worker", "imager"])

  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = google_service_account.sa[each.key].member
}

# The functions' custom build service account holds what Google documents for one (Cloud Run
# functions, "Custom service account for Cloud Build": logs writer, artifactregistry.writer,
# storage.objectViewer and storage.objectAdmin) and what the provider's own example with a build
# service account grants (cloudfunctions2_basic_builder: logWriter, artifactregistry.writer,
# storage.objectAdmin on the project). Here each is as narrow as it goes: logs writer (above),
# artifactregistry.writer on the one repository the builds push to (functions.tf), and Storage
# Object Admin (which includes the viewer's permissions) on the source bucket (bucket_grants)
# and on the gcf-v2-sources-<number>-<region> bucket Cloud Functions copies the source zip into.
# That bucket does not exist before the first deploy, so its grant is a project-level one whose
# condition admits that bucket only (a bucket's IAM resource name: projects/_/buckets/NAME).
resource "google_project_iam_member" "functions_builder_sources" {
  project = var.project_id
  role    = "roles/storage.objectAdmin"
  member  = google_service_account.sa["build"].member

  condition {
    title      = "gcf-v2-sources-only"
    expression = "resource.name.startsWith(\"projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}\")"
  }
}

resource "google_artifact_registry_repository_iam_member" "functions_builder" {
  project    = var.project_id
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.sa["build"].member
}

# IAM grants take a while to propagate: the provider's own Cloud Functions example with a custom
# build service account waits 60 s before the first build, or that build fails on permissions.
resource "time_sleep" "iam_propagation" {
  create_duration = "60s"

  depends_on = [
    google_artifact_registry_repository_iam_member.functions_builder,
    google_project_iam_member.functions_builder_sources,
    google_project_iam_member.log_writer,
    google_storage_bucket_iam_member.grant,
    google_project_iam_member.gcs_agent_publisher,
    google_project_iam_member.eventarc_agent,
    google_project_iam_member.pubsub_agent,
    google_project_iam_member.eventarc_receiver,
  ]
}

# --- Eventarc: the GCS service agent publishes, the trigger SA receives and invokes ---------

data "google_storage_project_service_account" "gcs_agent" {
  project = var.project_id

  depends_on = [google_project_service.required]
}

resource "google_project_iam_member" "gcs_agent_publisher" {
  project = var.project_id
  role    = "roles/pubsub.publisher"
  member  = data.google_storage_project_service_account.gcs_agent.member
}

# A new project's Eventarc and Pub/Sub service agents may not exist until first used; create them
# before anything is granted to them (GA google has no such resource: google-beta's).
resource "google_project_service_identity" "agent" {
  provider = google-beta
  for_each = toset(["eventarc.googleapis.com", "pubsub.googleapis.com"])

  project = var.project_id
  service = each.value

  depends_on = [google_project_service.required]
}

# Each agent's own predefined role: Google's "Create and grant roles to service agents" says
# service agents created at a user's request aren't automatically granted roles.
resource "google_project_iam_member" "eventarc_agent" {
  #checkov:skip=CKV_GCP_49:roles/eventarc.serviceAgent is Google's role for the Google-managed Eventarc agent, granted to that agent only, never to an account our code runs as.
  project = var.project_id
  role    = "roles/eventarc.serviceAgent"
  member  = google_project_service_identity.agent["eventarc.googleapis.com"].member
}

# The Pub/Sub agent signs the OIDC tokens of the push subscriptions (the done-flag trigger's
# Eventarc subscription, the webhooks') with its Cloud Pub/Sub Service Agent role.
resource "google_project_iam_member" "pubsub_agent" {
  #checkov:skip=CKV_GCP_49:roles/pubsub.serviceAgent is Google's role for the Google-managed Pub/Sub agent, granted to that agent only, never to an account our code runs as.
  project = var.project_id
  role    = "roles/pubsub.serviceAgent"
  member  = google_project_service_identity.agent["pubsub.googleapis.com"].member
}

resource "google_project_iam_member" "eventarc_receiver" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.sa["eventarc"].member
}

# The API hands callers resumable upload sessions for their own model files (POST /uploads):
# it reads an upload's size and MD5, starts the session, deletes a torn upload. Only objects
# under uploads/ (the IAM resource name of an object: projects/_/buckets/BUCKET/objects/NAME).
resource "google_storage_bucket_iam_member" "api_model_uploads" {
  count = var.create_models_bucket ? 1 : 0

  bucket = google_storage_bucket.models[0].name
  role   = "roles/storage.objectUser"
  member = google_service_account.sa["api"].member

  condition {
    title       = "model-uploads-only"
    description = "Objects under uploads/ of the models bucket"
    expression  = "resource.name.startsWith(\"projects/_/buckets/${google_storage_bucket.models[0].name}/objects/uploads/\")"
  }
}
