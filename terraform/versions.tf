terraform {
  required_version = ">= 1.9.0" # variable validations that read other variables

  # Exact pins: tests/test_deploy_schema.py checks every argument and block of this module
  # against these versions' schemas (tests/deploy/provider_schema.json). Moving a pin means
  # regenerating that extract (python -m tests.deploy.extract_provider_schema).
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "8.7.0"
    }
    # Only for google_project_service_identity, which has no GA resource.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "8.7.0"
    }
    # data.archive_file's glob `excludes` need 2.5.0 or later.
    archive = {
      source  = "hashicorp/archive"
      version = "2.8.1"
    }
    # time_sleep: IAM grants propagate before the functions build.
    time = {
      source  = "hashicorp/time"
      version = "0.14.2"
    }
  }
}
