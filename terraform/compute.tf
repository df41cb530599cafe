# The GPU VM pool: created stopped, started per job by the dispatcher, stopped by the worker.

locals {
  gpu_vms = {
    for index in range(var.gpu_vm_count) :
    format("%s-gpu-%02d", var.name_prefix, index) => var.gpu_zones[index % length(var.gpu_zones)]
  }
}

resource "google_compute_instance" "gpu" {
  #checkov:skip=CKV_GCP_38:CSEK needs the raw key on every start, which the dispatcher would then have to hold; Google-managed encryption protects the disk.
  #checkov:skip=CKV_GCP_39:Secure Boot is off because the image's NVIDIA kernel modules are not signed with a key the shielded VM trusts; vTPM and integrity monitoring stay on.
  for_each = local.gpu_vms

  project      = var.project_id
  name         = each.key
  zone         = each.value
  machine_type = var.gpu_machine_type
  tags         = ["${var.name_prefix}-gpu"]

  # The dispatcher selects the pool by this label (COMFYBURST_POOL_LABEL).
  labels = merge(local.labels, { (local.pool_label_key) = var.pool_name })

  # Created stopped: a VM bills GPU time only while the dispatcher has started it for a job.
  desired_status = "TERMINATED"

  boot_disk {
    auto_delete = true

    initialize_params {
      image = "projects/${local.gpu_image_project}/global/images/family/${var.gpu_image_family}"
      size  = var.gpu_boot_disk_size_gb
      type  = var.gpu_boot_disk_type
    }
  }

  dynamic "guest_accelerator" {
    for_each = var.gpu_accelerator_count > 0 ? [1] : []
    content {
      type  = var.gpu_accelerator_type
      count = var.gpu_accelerator_count
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.pool.id
    # No access_config: no external IP; egress goes through Cloud NAT.
  }

  scheduling {
    on_host_maintenance = "TERMINATE" # required with GPUs
    automatic_restart   = !var.gpu_spot
    preemptible         = var.gpu_spot
    provisioning_model  = var.gpu_spot ? "SPOT" : "STANDARD"
    # A preempted Spot VM stops (keeping its disk and model cache) instead of being deleted.
    instance_termination_action = var.gpu_spot ? "STOP" : null
  }

  shielded_instance_config {
    enable_secure_boot          = false
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  service_account {
    email  = google_service_account.sa["worker"].email
    scopes = ["cloud-platform"] # access is limited by the SA's IAM roles, not by scopes
  }

  metadata = {
    "enable-oslogin"         = "TRUE"
    "block-project-ssh-keys" = "true"
    "comfyburst-job"         = ""
    "comfyburst-config"      = jsonencode(local.deployment_config)
  }

  allow_stopping_for_update = false

  lifecycle {
    # The dispatcher owns metadata (job id, config) and the run state: an apply must never
    # rewrite a running job's metadata or stop its VM.
    ignore_changes = [metadata, desired_status]
  }

  depends_on = [
    google_project_iam_member.datastore_user,
    google_storage_bucket_iam_member.grant,
    google_secret_manager_secret_iam_member.worker_model_tokens,
    google_compute_router_nat.pool,
  ]
}
