# The smallest complete ComfyBurst deployment: IAM auth, defaults elsewhere.

provider "google" {
  project = var.project_id
  region  = var.region
}

# The module creates the Eventarc and Pub/Sub service agents with google-beta (no GA resource).
provider "google-beta" {
  project = var.project_id
  region  = var.region
}

module "comfyburst" {
  source = "../.."

  project_id          = var.project_id
  region              = var.region
  gpu_zones           = var.gpu_zones
  api_invoker_members = var.api_invoker_members
  allow_iap_ssh       = var.allow_iap_ssh
}
