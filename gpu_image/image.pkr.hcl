# The ComfyBurst GPU image: a Deep Learning VM image plus ComfyUI (pinned), pinned custom nodes,
# the worker agent and their systemd units. Scripts run in the numbered order below.

locals {
  build_stamp = regex_replace(timestamp(), "[- TZ:]", "")
  image_name  = "${var.image_family}-${local.build_stamp}"
  repo_root   = "${path.root}/.."
}

source "googlecompute" "gpu" {
  project_id              = var.project_id
  zone                    = var.zone
  subnetwork              = var.subnetwork
  source_image_family     = var.source_image_family
  source_image_project_id = [var.source_image_project_id]

  # terraform's output image_builder (deploy/bake.sh): the default class's machine and GPU. The
  # plugin takes a partial URL of the accelerator type; machine types that bring their GPU
  # (g2, a2, a3) get none attached.
  machine_type        = var.machine_type
  accelerator_type    = var.accelerator_count > 0 ? "projects/${var.project_id}/zones/${var.zone}/acceleratorTypes/${var.accelerator_type}" : ""
  accelerator_count   = var.accelerator_count
  on_host_maintenance = "TERMINATE"

  disk_size = var.disk_size_gb
  disk_type = var.disk_type

  image_name        = local.image_name
  image_family      = var.image_family
  image_description = "ComfyBurst GPU worker: ComfyUI ${var.comfyui_commit}"
  image_labels = {
    app            = "comfyburst"
    comfyui_commit = substr(var.comfyui_commit, 0, 12)
    source_hash    = substr(var.source_hash, 0, 32)
  }

  service_account_email = var.service_account_email
  scopes                = ["https://www.googleapis.com/auth/cloud-platform"]
  # The image build's IAP SSH rule (terraform/network.tf iap_ssh_imager) targets this tag only.
  tags             = ["${var.name_prefix}-imager"]
  use_iap          = var.use_iap
  use_os_login     = var.use_os_login
  omit_external_ip = var.omit_external_ip
  use_internal_ip  = var.omit_external_ip
  ssh_username     = var.ssh_username
  metadata = {
    block-project-ssh-keys = "true"
    # The Deep Learning VM image installs its NVIDIA driver at first boot when asked to (Google's
    # DLVM instructions: --metadata="install-nvidia-driver=True"); 01-driver-check.sh waits for it.
    install-nvidia-driver = "True"
  }
}

build {
  sources = ["source.googlecompute.gpu"]

  provisioner "shell" {
    inline = ["mkdir -p /tmp/comfyburst-src/functions /tmp/comfyburst-src/worker /tmp/comfyburst-src/systemd /tmp/comfyburst-src/scripts"]
  }

  # The shared package and the worker are installed from these folders (pip install), not copied.
  provisioner "file" {
    source      = "${local.repo_root}/functions/"
    destination = "/tmp/comfyburst-src/functions"
  }

  provisioner "file" {
    source      = "${local.repo_root}/gpu_image/worker/"
    destination = "/tmp/comfyburst-src/worker"
  }

  provisioner "file" {
    source      = "${path.root}/systemd/"
    destination = "/tmp/comfyburst-src/systemd"
  }

  provisioner "file" {
    source      = "${path.root}/custom_nodes.txt"
    destination = "/tmp/comfyburst-src/custom_nodes.txt"
  }

  provisioner "file" {
    source      = "${path.root}/comfyui-constraints.txt"
    destination = "/tmp/comfyburst-src/comfyui-constraints.txt"
  }

  # The numbered scripts source scripts/common.sh from here.
  provisioner "file" {
    source      = "${path.root}/scripts/"
    destination = "/tmp/comfyburst-src/scripts"
  }

  # The variables go to a file the command sources, not onto its command line: HF_TOKEN must
  # not show in the build VM's process list (Packer masks the sensitive value in its own logs).
  provisioner "shell" {
    use_env_var_file = true
    execute_command  = "sudo bash -c '. {{ .EnvVarFile }} && exec bash -euo pipefail {{ .Path }}'"
    environment_vars = [
      "COMFYBURST_SRC=/tmp/comfyburst-src",
      "COMFYUI_COMMIT=${var.comfyui_commit}",
      "TORCH_INDEX_URL=${var.torch_index_url}",
      "JOBS_BUCKET=${var.jobs_bucket}",
      "PREBAKED_MODELS=${var.prebaked_models}",
      "HF_TOKEN=${var.huggingface_token}",
    ]
    scripts = [
      "${path.root}/scripts/01-driver-check.sh",
      "${path.root}/scripts/02-comfyui.sh",
      "${path.root}/scripts/03-custom-nodes.sh",
      "${path.root}/scripts/04-worker.sh",
      "${path.root}/scripts/05-systemd.sh",
      "${path.root}/scripts/06-model-cache.sh",
      "${path.root}/scripts/07-export-catalogue.sh",
    ]
  }

  # Packer's uploaded scripts and their variable file (it held HF_TOKEN) stay out of the image.
  provisioner "shell" {
    inline = ["sudo find /tmp -maxdepth 1 -name 'packer*' -exec rm -rf {} +"]
  }

  post-processor "manifest" {
    output     = "${path.root}/manifest.json"
    strip_path = true
    custom_data = {
      image_family   = var.image_family
      comfyui_commit = var.comfyui_commit
    }
  }
}
