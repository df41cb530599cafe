# The GPU pool is templates, not VMs: one per GPU class and region its zones are in
# (gpu_classes.tf). The dispatcher creates a VM from the template of the zone's region when a job
# finds no stopped VM of its class, and stops it after its drain (the disk keeps the model
# cache). An apply creates no VM, so it needs no GPU capacity or quota and never boots (or bills)
# a GPU.

locals {
  class_label_key = "comfyburst-class"
  # Every class's zones: the fleet lists the pool's VMs there.
  pool_zones = distinct(flatten([for spec in local.gpu_class_specs : spec.zones]))

  # COMFYBURST_GPU_CLASSES: each class with the template of each of its regions. `id` is the
  # provider's projects/P/regions/R/instanceTemplates/N, a partial URL that instances.insert's
  # sourceInstanceTemplate takes.
  gpu_classes_env = [
    for spec in local.gpu_class_specs : merge(spec, {
      templates = {
        for region in local.gpu_class_regions[spec.name] :
        region => google_compute_region_instance_template.gpu["${spec.name}/${region}"].id
      }
    })
  ]
}

resource "google_compute_region_instance_template" "gpu" {
  #checkov:skip=CKV_GCP_38:CSEK needs the raw key on every start, which the dispatcher would then have to hold; Google-managed encryption protects the disk.
  #checkov:skip=CKV_GCP_39:Secure Boot is off because the image's NVIDIA kernel modules are not signed with a key the shielded VM trusts; vTPM and integrity monitoring stay on.
  for_each = local.gpu_templates

  project = var.project_id
  region  = each.value.region
  # Templates cannot change in place: a new one is made first, the functions are pointed at
  # it (COMFYBURST_GPU_CLASSES), then the old one goes. VMs made from it keep running.
  name_prefix  = "${var.name_prefix}-${each.value.class}-"
  machine_type = each.value.machine_type
  tags         = ["${var.name_prefix}-gpu"]

  # Labels and metadata both reach every VM created from the template (provider docs of
  # google_compute_region_instance_template). The dispatcher selects the pool and a class by
  # label (COMFYBURST_POOL_LABEL, comfyburst-class); the worker reads its class from metadata,
  # since the metadata server serves metadata, not labels.
  labels = merge(local.labels, {
    (local.pool_label_key)  = var.pool_name
    (local.class_label_key) = each.value.class
  })

  disk {
    boot         = true
    auto_delete  = true
    source_image = "projects/${local.gpu_image_project}/global/images/family/${var.gpu_image_family}"
    disk_size_gb = each.value.disk_size_gb
    disk_type    = each.value.disk_type
  }

  # GPUs are added to n1 machine types only; the accelerator-optimized ones (g2, a2, a3, ...)
  # come with theirs.
  dynamic "guest_accelerator" {
    for_each = startswith(each.value.machine_type, "n1-") && each.value.accelerator_count > 0 ? [1] : []
    content {
      type  = each.value.accelerator_type
      count = each.value.accelerator_count
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.pool[each.value.region].id
    # No access_config: no external IP; egress goes through Cloud NAT.
  }

  scheduling {
    on_host_maintenance = "TERMINATE" # required with GPUs
    automatic_restart   = false       # the dispatcher starts VMs; nothing else may
    preemptible         = each.value.spot
    provisioning_model  = each.value.spot ? "SPOT" : "STANDARD"
    # A preempted Spot VM stops (keeping its disk and model cache) instead of being deleted.
    instance_termination_action = each.value.spot ? "STOP" : null
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
    "comfyburst-class"       = each.value.class
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
