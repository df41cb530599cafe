# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are for the scripts that source this file
# Sourced by every provisioning script: Packer runs each script as its own process, so what one
# script exports is gone in the next. Every path, user and tool setting the scripts share is here.
# Variables already set by the caller (Packer's environment_vars, the bake rehearsal) win where
# noted: they switch sources only (where Python, torch and ComfyUI come from), never the layout.

# --- the layout of the image ----------------------------------------------------------------
readonly COMFYUI_DIR=/opt/comfyui
readonly WORKER_VENV=/opt/comfyburst/venv
readonly TOOLS_DIR=/opt/comfyburst/tools
# ComfyUI and its custom nodes run as COMFYUI_USER; the worker agent as WORKER_USER, which is
# also in COMFYUI_USER's group (never the reverse): it writes ComfyUI's input folder and reads
# and empties its output and temp folders; ComfyUI reads the models the worker fetched.
# COMFYUI_USER has no home on disk: comfyui.service gives it one that is emptied at every stop.
readonly COMFYUI_USER=comfyui
readonly WORKER_USER=comfyburst
# Environment builds (git, pip, the import probe: pack code) run as BUILD_USER, in no service
# group and with no home; the worker ends every process of it around each build (env_reap.py).
readonly BUILD_USER=comfyburst-build
readonly NO_HOME=/nonexistent
readonly WORKER_HOME=/var/lib/comfyburst
# Written by the worker only (owner WORKER_USER, group COMFYUI_USER, setgid, no group write).
readonly MODELS_ROOT=/var/lib/comfyburst-models
readonly MODEL_STORE_DIR="${MODELS_ROOT}/store"
readonly JOB_MODELS_DIR="${MODELS_ROOT}/job-models"
readonly GUARD_DIR=/etc/comfyburst
# Environment layers (custom-node packs built on top of ComfyUI's venv): the worker's (group
# ComfyUI, setgid, no group write); `cache/` holds the unpacked layers ComfyUI loads.
readonly ENV_LAYERS_DIR=/var/lib/comfyburst-environments
# comfyui.service's start (reads the worker's active layer file), root's, run by ComfyUI's user.
readonly COMFYUI_START=/usr/local/lib/comfyburst/comfyui_start.py

# --- where Python and packages come from ----------------------------------------------------
# uv installs the image's Python here, readable by both service users (root's home is not).
export UV_PYTHON_INSTALL_DIR=/opt/python
# Never a system interpreter: both venvs use the Python uv installed above.
export UV_PYTHON_PREFERENCE=only-managed
export UV_CACHE_DIR=/var/cache/comfyburst-build/uv
export UV_LINK_MODE=copy
PYTHON_VERSION="${PYTHON_VERSION:-3.12}"
readonly PYTHON_VERSION
readonly UV_VERSION=0.13.8
# The tools venv's pip, which environment builds run as ComfyUI's user: `--python` needs pip
# >= 22.3 (the OS venv's bundled pip may be older, e.g. 22.0 on Ubuntu 22.04).
readonly PIP_VERSION=25.2

# --- apt on a VM that may be upgrading itself on first boot ---------------------------------
export DEBIAN_FRONTEND=noninteractive
readonly APT_LOCK_WAIT_S=600
# Masked in the image (05-systemd.sh): no apt run after a boot.
readonly APT_PERIODIC_UNITS=(apt-daily.timer apt-daily-upgrade.timer apt-daily.service
  apt-daily-upgrade.service unattended-upgrades.service)
readonly APT_PERIODIC_CONF=/etc/apt/apt.conf.d/99comfyburst-no-periodic

# apt-get that waits for the dpkg lock instead of failing on it (unattended-upgrades and the
# apt-daily units take it right after the first boot); those units are stopped first.
apt_get() {
  systemctl stop unattended-upgrades.service apt-daily.service apt-daily-upgrade.service \
    >/dev/null 2>&1 || true
  apt-get -o "DPkg::Lock::Timeout=${APT_LOCK_WAIT_S}" -q "$@"
}

# Run a command as a service user (the checks run as the user that runs the unit).
as_user() {
  local user="$1"
  shift
  setpriv --reuid="${user}" --regid="${user}" --init-groups --reset-env -- "$@"
}
