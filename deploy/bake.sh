#!/bin/sh
# Step "bake": packer init/validate/build of gpu_image/ when image-decision said so. Runs in the
# pinned google-cloud-cli image (gcloud for the IAP tunnel) with the Packer of packer-binary.
# The build VM is terraform's output image_builder (the default GPU class's machine type, GPU,
# first zone and that region's pool subnet; read with the Terraform of terraform-binary from the
# state in TF_DIR), so the bake needs quota only for a GPU the deployment runs anyway.
# BAKE_MACHINE_TYPE, BAKE_ACCELERATOR_TYPE (none: the machine type brings its GPU),
# BAKE_ACCELERATOR_COUNT and BAKE_ZONE override it (BAKE_ZONE must be in the same region).
# The Hugging Face token is optional: read at run time when its secret has a version, handed to
# Packer as PKR_VAR_huggingface_token (an environment variable), never on a command line.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
derive_names
case "${USE_OS_LOGIN:-false}" in true | false) ;; *) die "USE_OS_LOGIN must be true or false" ;; esac

build=$(cat "${WORKSPACE}/build_image" 2>/dev/null || echo true)
if [ "${build}" != true ]; then
  echo "image up to date"
  exit 0
fi
PATH="${WORKSPACE}/bin:${PATH}"
export PATH
if [ "${DRY_RUN}" = 1 ]; then
  run terraform -chdir="${TF_DIR}" output -raw image_builder
  set -- "<machine_type>" "<accelerator_type>" "<accelerator_count>" "<zone>" "<subnetwork>"
else
  builder=$(terraform -chdir="${TF_DIR}" output -raw image_builder || true)
  # shellcheck disable=SC2086  # the output is five space-separated words
  set -- ${builder}
fi
[ "$#" -eq 5 ] || die "terraform output image_builder is not five words: apply terraform first"
machine_type="${BAKE_MACHINE_TYPE:-$1}"
accelerator_type="${BAKE_ACCELERATOR_TYPE:-$2}"
accelerator_count="${BAKE_ACCELERATOR_COUNT:-$3}"
zone="${BAKE_ZONE:-$4}"
subnetwork="$5"
if [ "${accelerator_type}" = none ]; then
  accelerator_type=""
  accelerator_count=0
fi
echo "build VM: ${machine_type} ${accelerator_type:-(its own GPU)} x${accelerator_count} in ${zone}"
source_hash=$(cat "${WORKSPACE}/source_hash" 2>/dev/null || echo unset)

if [ "${DRY_RUN}" = 1 ]; then
  run gcloud secrets versions access latest --secret="${HF_SECRET}" --project="${PROJECT_ID}"
elif token=$(gcloud secrets versions access latest --secret="${HF_SECRET}" \
  --project="${PROJECT_ID}" 2>/dev/null); then
  PKR_VAR_huggingface_token="${token}"
  export PKR_VAR_huggingface_token
  echo "Hugging Face token: from secret ${HF_SECRET}"
else
  # No version (the usual case: the token is optional) or no access to it: bake without one.
  echo "Hugging Face token: secret ${HF_SECRET} has no readable version; baking without one"
fi

cd "${REPO_ROOT}/gpu_image" || exit 1
set -- \
  -var "project_id=${PROJECT_ID}" \
  -var "zone=${zone}" \
  -var "subnetwork=${subnetwork}" \
  -var "machine_type=${machine_type}" \
  -var "accelerator_type=${accelerator_type}" \
  -var "accelerator_count=${accelerator_count}" \
  -var "service_account_email=${IMAGER_SA}" \
  -var "jobs_bucket=${JOBS_BUCKET}" \
  -var "name_prefix=${NAME_PREFIX}" \
  -var "image_family=${IMAGE_FAMILY}" \
  -var "source_hash=${source_hash}" \
  -var "use_os_login=${USE_OS_LOGIN:-false}"
run packer init .
run packer validate "$@" .
run packer build "$@" .
if [ "${DRY_RUN}" != 1 ]; then cat manifest.json; fi
