output "api_url" {
  description = "URL of the HTTP API: paste it into the ComfyBurst node's API URL setting."
  value       = google_cloudfunctions2_function.api.service_config[0].uri
}

output "results_topic" {
  description = "Pub/Sub topic the result messages are published to."
  value       = google_pubsub_topic.results.id
}

output "results_subscription" {
  description = "Pull subscription on the results topic."
  value       = google_pubsub_subscription.results.id
}

output "results_dead_letter_topic" {
  description = "Dead-letter topic of the results subscription."
  value       = google_pubsub_topic.results_dead_letter.id
}

output "buckets" {
  description = "Bucket names by purpose (models is null when not created)."
  value = {
    jobs            = google_storage_bucket.jobs.name
    outputs         = google_storage_bucket.outputs.name
    signals         = google_storage_bucket.signals.name
    models          = local.models_bucket
    function_source = google_storage_bucket.function_source.name
  }
}

output "service_accounts" {
  description = "Service account emails by component."
  value       = { for key, sa in google_service_account.sa : key => sa.email }
}

output "image_builder_service_account" {
  description = "Service account for the packer build VM (gpu_image/, variable service_account_email)."
  value       = google_service_account.sa["imager"].email
}

# One line for deploy/bake.sh (POSIX sh, no JSON parser): it depends on the builder's subnet, so
# the bootstrap's targeted apply (deploy/terraform-bootstrap.sh) writes it too.
output "image_builder" {
  description = "The image build VM for deploy/bake.sh, space-separated: machine type, accelerator type (none: the machine type brings its GPU), accelerator count, zone, subnetwork; the default GPU class's."
  value = join(" ", [
    local.image_builder.machine_type,
    local.image_builder.accelerator_type,
    tostring(local.image_builder.accelerator_count),
    local.image_builder.zone,
    google_compute_subnetwork.pool[local.image_builder.region].id,
  ])
}

output "gpu_templates" {
  description = "Instance template of each GPU class in each of its regions, { class = { region = id } } (COMFYBURST_GPU_CLASSES)."
  value       = { for c in local.gpu_classes_env : c.name => c.templates }
}

output "default_gpu_class" {
  description = "Class of jobs that ask for none (COMFYBURST_DEFAULT_GPU_CLASS)."
  value       = local.default_gpu_class
}

output "pool_label" {
  description = "key=value label of the pool (COMFYBURST_POOL_LABEL)."
  value       = "${local.pool_label_key}=${var.pool_name}"
}

output "subnetwork" {
  description = "Self link of the pool's subnet in var.region (also usable for the packer build VM)."
  value       = google_compute_subnetwork.pool[var.region].self_link
}

output "subnetworks" {
  description = "Self link of the pool's subnet in each region the GPU classes use, by region."
  value       = { for region, subnet in google_compute_subnetwork.pool : region => subnet.self_link }
}

output "webhooks_dead_letter_subscription" {
  description = "Subscription holding webhooks no receiver took (inspection and replay)."
  value       = google_pubsub_subscription.webhooks_dead_letter.id
}

output "webhook_secret_ids" {
  description = "Secret Manager secrets holding the webhook signing secrets (current, previous)."
  value       = { for k, s in google_secret_manager_secret.webhook_secret : k => s.secret_id }
}
