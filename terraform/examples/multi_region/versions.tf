terraform {
  required_version = ">= 1.9.0" # variable validations that read other variables

  # The same exact pins as the module (../../versions.tf), whose schemas the offline check uses.
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "8.7.0"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "8.7.0"
    }
  }
}
