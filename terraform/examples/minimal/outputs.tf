output "api_url" {
  description = "Paste into the ComfyBurst node."
  value       = module.comfyburst.api_url
}

output "buckets" {
  description = "Bucket names by purpose."
  value       = module.comfyburst.buckets
}

output "image_builder_service_account" {
  description = "Service account for `packer build`."
  value       = module.comfyburst.image_builder_service_account
}

output "subnetwork" {
  description = "Subnet for the packer build VM."
  value       = module.comfyburst.subnetwork
}

output "image_builder" {
  description = "The image build VM deploy/bake.sh reads (the default GPU class's machine, GPU, zone and subnet)."
  value       = module.comfyburst.image_builder
}
