# shellcheck shell=sh
# shellcheck disable=SC2034  # the names are for the scripts that source this file
# Sourced by every pipeline step script (deploy/*.sh): POSIX sh, because the Terraform and Packer
# images have no bash. Each script is one Cloud Build step (cloudbuild.yaml) and a `make` target.
#
#   --dry-run (or DRY_RUN=1): check the inputs, write the workspace files, print each command
#   that talks to Google Cloud (gcloud, terraform, packer) instead of running it.
#
# Inputs come from the environment (cloudbuild.yaml's step `env`); WORKSPACE is Cloud Build's
# /workspace, shared by the steps.

set -eu

DRY_RUN="${DRY_RUN:-0}"
if [ "${1:-}" = "--dry-run" ]; then
  DRY_RUN=1
  shift
fi
WORKSPACE="${WORKSPACE:-/workspace}"
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The root module the terraform steps run in (the tests point it at a copy).
TF_DIR="${TF_DIR:-${REPO_ROOT}/terraform}"

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

# require NAME...: each must be set and non-empty.
require() {
  for name in "$@"; do
    eval "value=\${${name}:-}"
    # shellcheck disable=SC2154  # value is set by the eval above
    [ -n "${value}" ] || die "${name} is required (a Cloud Build substitution or env var)"
  done
}

# run CMD...: run it, or print it in dry-run mode. Never pass a secret as an argument.
run() {
  if [ "${DRY_RUN}" = 1 ]; then
    echo "+ $*"
  else
    "$@"
  fi
}

# The names every part derives from NAME_PREFIX (terraform/main.tf, iam.tf, network.tf, …).
derive_names() {
  require PROJECT_ID NAME_PREFIX
  case "${NAME_PREFIX}" in
    *[!a-z0-9-]* | -* | *-) die "NAME_PREFIX must be lowercase letters, digits and inner hyphens" ;;
  esac
  IMAGE_FAMILY="${NAME_PREFIX}-gpu"
  SUBNET_NAME="${NAME_PREFIX}-pool"
  IMAGER_SA="${NAME_PREFIX}-imager@${PROJECT_ID}.iam.gserviceaccount.com"
  JOBS_BUCKET="${PROJECT_ID}-${NAME_PREFIX}-jobs"
  HF_SECRET="${NAME_PREFIX}-huggingface-token"
}

# copy_binary TOOL: the step image's TOOL (a static Go binary) into /workspace/bin, where the
# later steps (test, bake) find it on PATH.
copy_binary() {
  found=$(command -v "$1" || true)
  if [ -z "${found}" ]; then
    [ "${DRY_RUN}" = 1 ] || die "no $1 in this image"
    found="/bin/$1"
  fi
  mkdir -p "${WORKSPACE}/bin"
  run cp "${found}" "${WORKSPACE}/bin/$1"
  run "${WORKSPACE}/bin/$1" version
}

mkdir -p "${WORKSPACE}"
