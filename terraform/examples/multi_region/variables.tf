variable "project_id" {
  type        = string
  description = "Google Cloud project to deploy into."
}

variable "region" {
  type        = string
  description = "Region of the functions and buckets (and of the image build)."
  default     = "us-central1"
}

variable "allow_iap_ssh" {
  type        = bool
  description = "Let SSH through Identity-Aware Proxy reach the pool's GPU VMs, for debugging (the image build VM has its own rule)."
  default     = false
}

variable "api_invoker_members" {
  type        = list(string)
  description = "Who may call the API, e.g. [\"user:me@example.com\"]."
  default     = []
}
