# Firestore (native mode) and the TTL that expires job documents.

resource "google_firestore_database" "default" {
  count = var.create_firestore_database ? 1 : 0

  project                 = var.project_id
  name                    = "(default)"
  location_id             = var.firestore_location
  type                    = "FIRESTORE_NATIVE"
  delete_protection_state = "DELETE_PROTECTION_ENABLED"
  # The database outlives `terraform destroy`: it holds the job history and a project's
  # (default) database name cannot be reused for a while after deletion.
  deletion_policy = "ABANDON"

  depends_on = [google_project_service.required]
}

# jobs/{job_id}.expire_at is set to created_at + job_ttl_days by the API.
resource "google_firestore_field" "jobs_expire_at" {
  project    = var.project_id
  database   = "(default)"
  collection = "jobs"
  field      = "expire_at"

  ttl_config {}

  # A TTL field needs no single-field index; leaving them out keeps writes cheap.
  index_config {}

  depends_on = [google_firestore_database.default]
}

# vms_warm_idle/{vm}-{ms}.expire_at: a warm stretch is kept WARM_IDLE_KEPT_DAYS
# (domain/usage.py) after it ended; the VM's worker sets it.
resource "google_firestore_field" "warm_idle_expire_at" {
  project    = var.project_id
  database   = "(default)"
  collection = "vms_warm_idle"
  field      = "expire_at"

  ttl_config {}

  index_config {}

  depends_on = [google_firestore_database.default]
}

# FirestoreJobStore.list_jobs: `state in [...]` ordered by created_at (the reaper's and the
# draining worker's queue scans) needs a composite index in real Firestore; the same scan of one
# GPU class's queue (`gpu_class ==`: the draining worker when the oldest live jobs are all of
# other classes) needs one that starts with the class. FirestoreJobStore.queued_heads (each
# caller's oldest queued job of a class, for fair share: `caller >` ordered by caller, then
# created_at) needs one with the caller before created_at.
locals {
  queue_indexes = {
    state              = ["state"]
    class_state        = ["gpu_class", "state"]
    class_state_caller = ["gpu_class", "state", "caller"]
  }
}

resource "google_firestore_index" "jobs_queue" {
  for_each = local.queue_indexes

  project    = var.project_id
  database   = "(default)"
  collection = "jobs"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path = "created_at"
    order      = "ASCENDING"
  }

  depends_on = [google_firestore_database.default]
}

# FirestoreJobStore.last_started (fair share's "served least recently": a caller's latest
# started job of a class): `caller ==`, `gpu_class ==`, ordered by started_at descending, one
# document per waiting caller. Equality filters with a sort on another field need a composite
# index, the sort's direction included.
resource "google_firestore_index" "jobs_served" {
  project    = var.project_id
  database   = "(default)"
  collection = "jobs"

  fields {
    field_path = "caller"
    order      = "ASCENDING"
  }
  fields {
    field_path = "gpu_class"
    order      = "ASCENDING"
  }
  fields {
    field_path = "started_at"
    order      = "DESCENDING"
  }
  # What Firestore appends to a composite index anyway (the last field's direction).
  fields {
    field_path = "__name__"
    order      = "DESCENDING"
  }

  depends_on = [google_firestore_database.default]
}

# The index deployments before GPU classes made, kept (not rebuilt) under its new address.
moved {
  from = google_firestore_index.jobs_state_created_at
  to   = google_firestore_index.jobs_queue["state"]
}

# FirestoreJobStore.list_unpublished_results: terminal states without result_published_at.
resource "google_firestore_index" "jobs_state_result_published_at" {
  project    = var.project_id
  database   = "(default)"
  collection = "jobs"

  fields {
    field_path = "state"
    order      = "ASCENDING"
  }
  fields {
    field_path = "result_published_at"
    order      = "ASCENDING"
  }

  depends_on = [google_firestore_database.default]
}

# GET /jobs (adapters/firestore_views.py): a caller's jobs newest first, optionally of some
# states and in a created_at range; admins list without the caller filter. Each index ends in
# the document id in the same direction, which the query orders by as its tie-breaker.
locals {
  job_list_indexes = {
    caller_created_at       = ["caller"]
    caller_state_created_at = ["caller", "state"]
    state_created_at_desc   = ["state"]
  }
}

resource "google_firestore_index" "jobs_list" {
  for_each = local.job_list_indexes

  project    = var.project_id
  database   = "(default)"
  collection = "jobs"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "DESCENDING"
  }

  depends_on = [google_firestore_database.default]
}

# GET /api/v2/jobs?metadata[k]=v (adapters/firestore_views.py): a caller's jobs carrying one
# label, newest first (`label_pairs array-contains`; admins list without the caller filter).
# A second or third label is checked on the documents read, so no index per label combination.
locals {
  job_label_indexes = {
    caller_labels = ["caller"]
    labels        = []
  }
}

resource "google_firestore_index" "jobs_labels" {
  for_each = local.job_label_indexes

  project    = var.project_id
  database   = "(default)"
  collection = "jobs"

  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path   = "label_pairs"
    array_config = "CONTAINS"
  }
  fields {
    field_path = "created_at"
    order      = "DESCENDING"
  }
  fields {
    field_path = "__name__"
    order      = "DESCENDING"
  }

  depends_on = [google_firestore_database.default]
}

# GET /environments (adapters/firestore_environments.py): the environments a caller asked for,
# most recently asked first.
resource "google_firestore_index" "environment_access_caller_asked_at" {
  project    = var.project_id
  database   = "(default)"
  collection = "environment_access"

  fields {
    field_path = "caller"
    order      = "ASCENDING"
  }
  fields {
    field_path = "asked_at"
    order      = "DESCENDING"
  }
  # What Firestore appends to a composite index anyway (the last field's direction).
  fields {
    field_path = "__name__"
    order      = "DESCENDING"
  }

  depends_on = [google_firestore_database.default]
}

# GET /usage and the monthly budget check (adapters/firestore_usage.py): a caller's terminal
# jobs finished in a range (`caller ==`, a `finished_at` range ordered by it, then the document
# id ascending, which Firestore appends itself). Everyone's (an admin's) needs only the
# automatic single-field index on finished_at.
resource "google_firestore_index" "jobs_usage" {
  project    = var.project_id
  database   = "(default)"
  collection = "jobs"

  fields {
    field_path = "caller"
    order      = "ASCENDING"
  }
  fields {
    field_path = "finished_at"
    order      = "ASCENDING"
  }

  depends_on = [google_firestore_database.default]
}
