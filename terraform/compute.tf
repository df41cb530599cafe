# The GPU pool is a template, not a set of VMs: the dispatcher creates VMs from it when a job
# finds no stopped VM, and stops them after their drain (the disk keeps the model cache). An
# apply creates no VM, so it needs no GPU capacity or quota and never boots (or bills) a GPU.

resource "google_compute_region_instance_template" "gpu" {
  #checkov:skip=CKV_GCP_38:CSEK needs the raw key on every start, which the dispatcher would then have to hold; Google-managed encryption protects the disk.
  #checkov:skip=CKV_GCP_39:Secure Boot is off because the image's NVIDIA kernel modules are not signed with a key the shielded VM trusts; vTPM and integrity monitoring stay on.
  project = var.project_id
  region  = var.region
  # Templates cannot change in place: a new one is made first, the functions are pointed at
  # it (COMFYBURST_POOL_TEMPLATE), then the old one goes. VMs made from it keep running.
  name_prefix  = "${var.name_prefix}-gpu-"
  machine_type = var.gpu_machine_type
  tags         = ["${var.name_prefix}-gpu"]

  # The dispatcher selects the pool by this label (COMFYBURST_POOL_LABEL).
  labels = merge(local.labels, { (local.pool_label_key) = var.pool_name })

  disk {
    boot         = true
    auto_delete  = true
    source_image = "projects/${local.gpu_image_project}/global/images/family/${var.gpu_image_family}"
    disk_size_gb = var.gpu_boot_disk_size_gb
    disk_type    = var.gpu_boot_disk_type
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
    automatic_restart   = false       # the dispatcher starts VMs; nothing else may
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

  # The dispatcher adds the job hint at create time; the config is the template's.
  metadata = {
    "enable-oslogin"         = "TRUE"
    "block-project-ssh-keys" = "true"
    "comfyburst-config"      = jsonencode(local.deployment_config)
  }

  lifecycle {
    create_before_destroy = true
  }

  depends_on = [
    google_project_iam_member.datastore_user,
    google_storage_bucket_iam_member.grant,
    google_secret_manager_secret_iam_member.worker_model_tokens,
    google_compute_router_nat.pool,
  ]
}
