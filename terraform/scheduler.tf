# Cloud Scheduler calls the reaper every minute with an OIDC token of its own service account.

resource "google_cloud_scheduler_job" "reaper" {
  project          = var.project_id
  region           = var.region
  name             = "${var.name_prefix}-reaper"
  description      = "Runs the ComfyBurst reaper."
  schedule         = var.reaper_schedule
  time_zone        = var.scheduler_time_zone
  attempt_deadline = "${var.reaper_timeout_s}s"

  retry_config {
    # The next tick is a retry; overlapping sweeps would only contend.
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.reaper.service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.sa["scheduler"].email
      audience              = google_cloudfunctions2_function.reaper.service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.reaper_invoker]
}
