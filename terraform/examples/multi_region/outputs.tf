output "api_url" {
  description = "Paste into the ComfyBurst node."
  value       = module.comfyburst.api_url
}

output "gpu_templates" {
  description = "Instance template of each class in each of its regions."
  value       = module.comfyburst.gpu_templates
}

output "subnetworks" {
  description = "The pool's subnet in each region."
  value       = module.comfyburst.subnetworks
}

output "image_builder_service_account" {
  description = "Service account for `packer build`."
  value       = module.comfyburst.image_builder_service_account
}

output "subnetwork" {
  description = "The pool's subnet in var.region."
  value       = module.comfyburst.subnetwork
}

output "image_builder" {
  description = "The image build VM deploy/bake.sh reads (the default GPU class's machine, GPU, zone and subnet)."
  value       = module.comfyburst.image_builder
}
