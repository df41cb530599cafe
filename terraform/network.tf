# A private network for the GPU pool: no external IPs, Cloud NAT for model downloads,
# Private Google Access for GCS, Firestore and Secret Manager. One VPC; a subnet, Cloud Router
# and Cloud NAT in each region a GPU class has zones in, and in var.region (the image build).
# Subnets, routers and NATs are regional, so each region's have the same name.

resource "google_compute_network" "pool" {
  project                 = var.project_id
  name                    = "${var.name_prefix}-pool"
  auto_create_subnetworks = false

  depends_on = [google_project_service.required]
}

resource "google_compute_subnetwork" "pool" {
  for_each = local.pool_subnet_cidrs

  project                  = var.project_id
  name                     = "${var.name_prefix}-pool"
  region                   = each.key
  network                  = google_compute_network.pool.id
  ip_cidr_range            = each.value
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_router" "pool" {
  for_each = local.pool_subnet_cidrs

  project = var.project_id
  name    = "${var.name_prefix}-pool"
  region  = each.key
  network = google_compute_network.pool.id
}

# Cloud NAT bills per VM-hour of VMs using it and per GB: nothing while the pool is stopped.
resource "google_compute_router_nat" "pool" {
  for_each = google_compute_router.pool

  project                            = var.project_id
  name                               = "${var.name_prefix}-pool"
  region                             = each.key
  router                             = each.value.name
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.pool[each.key].id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Identity-Aware Proxy's range only, port 22 only, to the pool's VMs only when asked for.
resource "google_compute_firewall" "iap_ssh" {
  count = var.allow_iap_ssh ? 1 : 0

  project       = var.project_id
  name          = "${var.name_prefix}-pool-iap-ssh"
  network       = google_compute_network.pool.id
  direction     = "INGRESS"
  source_ranges = ["35.235.240.0/20"]
  target_tags   = ["${var.name_prefix}-gpu"]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# The image build's VM (network tag <name_prefix>-imager, gpu_image/image.pkr.hcl): Packer
# reaches it through IAP whatever allow_iap_ssh says; no pool VM carries the tag.
resource "google_compute_firewall" "iap_ssh_imager" {
  project       = var.project_id
  name          = "${var.name_prefix}-imager-iap-ssh"
  network       = google_compute_network.pool.id
  direction     = "INGRESS"
  source_ranges = ["35.235.240.0/20"]
  target_tags   = ["${var.name_prefix}-imager"]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
