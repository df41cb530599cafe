# Two GPU classes over zones in two regions: L4 on Spot where it is cheapest, and a standard
# L4 class that takes a job Spot preemptions keep interrupting. Zero VMs until the first job.

provider "google" {
  project = var.project_id
  region  = var.region
}

# The module creates the Eventarc and Pub/Sub service agents with google-beta (no GA resource).
provider "google-beta" {
  project = var.project_id
  region  = var.region
}

locals {
  # price_per_hour (USD per VM hour, for receipts): g2-standard-8 + one NVIDIA L4 in
  # us-central1, Google's SKU prices as transcribed by SkyPilot's catalog
  # (github.com/skypilot-org/skypilot-catalog, catalogs/v7/gcp/vms.csv at commit 017e2502,
  # read 2026-12-02; Google's pricing pages render their tables with JavaScript, which we could
  # not read). us-east4 differs by under 0.4%. Spot prices can change daily: check
  # cloud.google.com/spot-vms/pricing (docs/DEPLOY.md); 0 keeps money out of receipts.
  # Check which zones offer L4s: gcloud compute accelerator-types list --filter=name=nvidia-l4
  gpu_classes = {
    "l4-spot" = {
      machine_type      = "g2-standard-8"
      accelerator_type  = "nvidia-l4"
      accelerator_count = 1
      spot              = true
      zones             = ["us-central1-a", "us-central1-c", "us-east4-a", "us-east4-c"]
      price_per_hour    = 0.3406 # Spot: $0.11747 + $0.2231
      max_vms           = 8
      max_vms_per_zone  = 4
    }
    "l4" = {
      machine_type      = "g2-standard-8"
      accelerator_type  = "nvidia-l4"
      accelerator_count = 1
      zones             = ["us-central1-a", "us-east4-a"]
      price_per_hour    = 0.8536 # on demand: $0.29358 + $0.56004
      max_vms           = 2
      max_vms_per_zone  = 1
    }
  }
}

module "comfyburst" {
  source = "../.."

  project_id          = var.project_id
  region              = var.region
  api_invoker_members = var.api_invoker_members
  allow_iap_ssh       = var.allow_iap_ssh

  gpu_classes               = local.gpu_classes
  default_gpu_class         = "l4-spot"
  preemption_fallback_class = "l4"
  # A subnet per region the classes use; var.region's is subnet_cidr (10.80.0.0/24).
  subnet_cidrs = { "us-east4" = "10.80.1.0/24" }
}
