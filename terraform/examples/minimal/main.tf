# The smallest complete ComfyBurst deployment: one T4 VM, IAM auth, defaults elsewhere.

provider "google" {
  project = var.project_id
  region  = var.region
}

module "comfyburst" {
  source = "../.."

  project_id          = var.project_id
  region              = var.region
  gpu_zones           = var.gpu_zones
  gpu_vm_count        = var.gpu_vm_count
  api_invoker_members = var.api_invoker_members
}
