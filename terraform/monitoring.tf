# Operators' view: log-based metrics over the functions' structured JSON lines
# (functions/comfyburst/domain/ops_metrics.py), a dashboard over them, and two alert policies.
# Every line the metrics read has jsonPayload.logger "comfyburst.ops" and one `event`;
# tests/test_deploy_monitoring.py checks each filter against lines the code emits.

locals {
  # Cloud Run functions (2nd gen) run as Cloud Run services named like the function.
  ops_filter = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name:\"${var.name_prefix}-\" AND jsonPayload.logger=\"comfyburst.ops\""

  # One distribution metric per field of the reaper's `pool_gauges` line (one value each).
  pool_gauges = {
    queued               = "Jobs queued, per GPU class, as each reaper period saw them."
    running_vms          = "VMs Compute reports RUNNING, per GPU class, each reaper period."
    unleased_running_vms = "RUNNING VMs that no job and no draining worker holds, per GPU class."
    past_deadline        = "Jobs not ended whose deadline has passed, per GPU class."
  }

  # PromQL names of the metrics: logging.googleapis.com/user/NAME with the first `/` as `:`
  # and every other character outside [A-Za-z0-9_] as `_`.
  promql_jobs_ended = "logging_googleapis_com:user_${replace(google_logging_metric.jobs_ended.name, "/[^A-Za-z0-9_]/", "_")}"
  promql_cost       = "logging_googleapis_com:user_${replace(google_logging_metric.job_cost_usd.name, "/[^A-Za-z0-9_]/", "_")}"
  promql_phases     = "logging_googleapis_com:user_${replace(google_logging_metric.job_phase_seconds.name, "/[^A-Za-z0-9_]/", "_")}"
  promql_pool       = { for k, m in google_logging_metric.pool : k => "logging_googleapis_com:user_${replace(m.name, "/[^A-Za-z0-9_]/", "_")}" }
}

resource "google_logging_metric" "jobs_ended" {
  depends_on = [google_project_service.required]

  project = var.project_id
  name    = "${var.name_prefix}_jobs_ended"
  filter  = "${local.ops_filter} AND jsonPayload.event=\"job_ended\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "ComfyBurst jobs ended"
    labels {
      key         = "state"
      value_type  = "STRING"
      description = "Terminal state: succeeded, failed, cancelled or timed_out."
    }
    labels {
      key         = "gpu_class"
      value_type  = "STRING"
      description = "The job's GPU class."
    }
  }
  label_extractors = {
    state     = "EXTRACT(jsonPayload.state)"
    gpu_class = "EXTRACT(jsonPayload.gpu_class)"
  }
}

resource "google_logging_metric" "job_cost_usd" {
  depends_on = [google_project_service.required]

  project         = var.project_id
  name            = "${var.name_prefix}_job_cost_usd"
  filter          = "${local.ops_filter} AND jsonPayload.event=\"job_ended\""
  value_extractor = "EXTRACT(jsonPayload.cost_usd)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "USD"
    display_name = "ComfyBurst job cost"
    labels {
      key         = "gpu_class"
      value_type  = "STRING"
      description = "The job's GPU class."
    }
  }
  label_extractors = {
    gpu_class = "EXTRACT(jsonPayload.gpu_class)"
  }
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 24
      growth_factor      = 2
      scale              = 0.0001
    }
  }
}

resource "google_logging_metric" "job_phase_seconds" {
  depends_on = [google_project_service.required]

  project         = var.project_id
  name            = "${var.name_prefix}_job_phase_seconds"
  filter          = "${local.ops_filter} AND jsonPayload.event=\"job_phase\""
  value_extractor = "EXTRACT(jsonPayload.seconds)"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "s"
    display_name = "ComfyBurst job phase duration"
    labels {
      key         = "phase"
      value_type  = "STRING"
      description = "vm_start, guest_boot, agent_start, claim, comfyui_start, environment, models, first_step or run."
    }
    labels {
      key         = "gpu_class"
      value_type  = "STRING"
      description = "The job's GPU class."
    }
  }
  label_extractors = {
    phase     = "EXTRACT(jsonPayload.phase)"
    gpu_class = "EXTRACT(jsonPayload.gpu_class)"
  }
  bucket_options {
    exponential_buckets {
      num_finite_buckets = 32
      growth_factor      = 1.5
      scale              = 0.05
    }
  }
}

resource "google_logging_metric" "pool" {
  for_each   = local.pool_gauges
  depends_on = [google_project_service.required]

  project         = var.project_id
  name            = "${var.name_prefix}_pool_${each.key}"
  description     = each.value
  filter          = "${local.ops_filter} AND jsonPayload.event=\"pool_gauges\""
  value_extractor = "EXTRACT(jsonPayload.${each.key})"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "DISTRIBUTION"
    unit         = "1"
    display_name = "ComfyBurst pool ${each.key}"
    labels {
      key         = "gpu_class"
      value_type  = "STRING"
      description = "The GPU class."
    }
  }
  label_extractors = {
    gpu_class = "EXTRACT(jsonPayload.gpu_class)"
  }
  bucket_options {
    linear_buckets {
      num_finite_buckets = 64
      width              = 1
      offset             = 0
    }
  }
}

resource "google_monitoring_dashboard" "ops" {
  depends_on = [google_project_service.required]

  project = var.project_id
  dashboard_json = templatefile("${path.module}/dashboard.json.tftpl", {
    title       = "ComfyBurst (${var.name_prefix})"
    jobs_ended  = local.promql_jobs_ended
    cost        = local.promql_cost
    phases      = local.promql_phases
    queued      = local.promql_pool["queued"]
    running     = local.promql_pool["running_vms"]
    unleased    = local.promql_pool["unleased_running_vms"]
    overdue     = local.promql_pool["past_deadline"]
    window_long = "1h"
    window      = "5m"
  })
}

resource "google_monitoring_alert_policy" "job_past_deadline" {
  depends_on = [google_project_service.required]

  project               = var.project_id
  display_name          = "ComfyBurst (${var.name_prefix}): job stuck past its deadline"
  combiner              = "OR"
  severity              = "ERROR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "Jobs not ended past their deadline"
    condition_prometheus_query_language {
      query    = "sum by (gpu_class) (increase(${local.promql_pool["past_deadline"]}_sum[5m])) / sum by (gpu_class) (increase(${local.promql_pool["past_deadline"]}_count[5m])) > 0"
      duration = "${var.stuck_job_alert_after_s}s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "ComfyBurst: a job is past its deadline and not ended"
    content   = "The reaper ends a job whose deadline passed (timed_out) in its next period. A job still live past it means the reaper is not running or cannot write the job. See docs/OPERATIONS.md, \"Job stuck past its deadline\"."
  }

  alert_strategy {
    auto_close = "1800s"
  }
}

resource "google_monitoring_alert_policy" "vm_without_job" {
  depends_on = [google_project_service.required]

  project               = var.project_id
  display_name          = "ComfyBurst (${var.name_prefix}): VM running with no job"
  combiner              = "OR"
  severity              = "WARNING"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "RUNNING VMs no job or draining worker holds"
    condition_prometheus_query_language {
      query    = "sum by (gpu_class) (increase(${local.promql_pool["unleased_running_vms"]}_sum[5m])) / sum by (gpu_class) (increase(${local.promql_pool["unleased_running_vms"]}_count[5m])) > 0"
      duration = "${var.idle_vm_alert_after_s}s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    subject   = "ComfyBurst: a GPU VM runs with no job"
    content   = "A RUNNING pool VM that no job, draining worker or warm schedule holds is billed for nothing; the reaper stops it after the drain grace. Still running means the stop fails or the reaper is not running. See docs/OPERATIONS.md, \"VM running with no job\"."
  }

  alert_strategy {
    auto_close = "1800s"
  }
}
