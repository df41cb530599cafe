variable "project_id" {
  type        = string
  description = "Project the build VM runs in and the image is stored in."
}

variable "zone" {
  type        = string
  description = "Zone of the build VM; it must offer accelerator_type."
  default     = "us-central1-a"
}

variable "subnetwork" {
  type        = string
  description = "Subnet of the build VM (terraform output `subnetwork`); its region must hold zone."
}

variable "use_iap" {
  type        = bool
  description = "SSH to the build VM through Identity-Aware Proxy (needs gcloud; terraform's firewall rule <name_prefix>-imager-iap-ssh allows it)."
  default     = true
}

variable "use_os_login" {
  type        = bool
  description = "SSH with an OS Login key instead of a metadata key: needed where the org policy constraints/compute.requireOsLogin is enforced (docs/DEPLOY.md)."
  default     = false
}

variable "omit_external_ip" {
  type        = bool
  description = "Give the build VM no external IP; egress then goes through the pool subnet's Cloud NAT."
  default     = true
}

variable "service_account_email" {
  type        = string
  description = "Service account of the build VM (terraform output `image_builder_service_account`)."
}

variable "jobs_bucket" {
  type        = string
  description = "Jobs bucket (terraform output `buckets.jobs`): the node catalogue goes to gs://JOBS_BUCKET/catalogue/object_info.json."
}

variable "source_image_family" {
  type        = string
  description = "Deep Learning VM image family with the NVIDIA driver and CUDA preinstalled."
  default     = "common-cu128-ubuntu-2204-nvidia-570"
}

variable "source_image_project_id" {
  type        = string
  description = "Project of the source image family."
  default     = "deeplearning-platform-release"
}

variable "machine_type" {
  type        = string
  description = "Machine type of the build VM (deploy/bake.sh passes terraform's image_builder: the default GPU class's)."
  default     = "n1-standard-8"
}

variable "accelerator_type" {
  type        = string
  description = "GPU attached to the build VM (short name; the zone is added); ignored when accelerator_count is 0."
  default     = "nvidia-tesla-t4"
}

variable "accelerator_count" {
  type        = number
  description = "GPUs attached to the build VM; 0 for machine types that bring their GPU (g2, a2, a3)."
  default     = 1
}

variable "disk_size_gb" {
  type        = number
  description = "Boot disk of the build VM, in GB: the baked image's size, the smallest boot disk a pool VM can have (terraform gpu_image_disk_size_gb)."
  default     = 100
}

variable "disk_type" {
  type        = string
  description = "Boot disk type of the build VM."
  default     = "pd-balanced"
}

variable "image_family" {
  type        = string
  description = "Family of the baked image (terraform variable gpu_image_family)."
  default     = "comfyburst-gpu"
}

variable "comfyui_commit" {
  type        = string
  description = "ComfyUI commit baked into the image (v0.3.64)."
  default     = "a125cd84b054a57729b5eecab930ca9408719832"
}

variable "torch_index_url" {
  type        = string
  description = "PyTorch wheel index matching the image's CUDA (cu128 for driver 570)."
  default     = "https://download.pytorch.org/whl/cu128"
}

variable "prebaked_models" {
  type        = string
  description = "Optional models baked into the cache: lines 'kind/filename url [sha256]', separated by ';'."
  default     = ""
}

variable "ssh_username" {
  type        = string
  description = "User packer connects as."
  default     = "packer"
}

variable "source_hash" {
  type        = string
  description = "Content hash of gpu_image/ and functions/ (Cloud Build rebuilds when it changes); stored as an image label."
  default     = "unset"
}

variable "name_prefix" {
  type        = string
  description = "terraform's name_prefix: the build VM carries the network tag <name_prefix>-imager that the image build's IAP SSH rule targets."
  default     = "comfyburst"
}

variable "huggingface_token" {
  type        = string
  description = "Optional Hugging Face token for pre-baked models hosted there; never stored in the image. Pass it as the environment variable PKR_VAR_huggingface_token, never with -var on a command line."
  default     = ""
  sensitive   = true
}
