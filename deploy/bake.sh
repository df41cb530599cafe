#!/bin/sh
# Step "bake": packer init/validate/build of gpu_image/ when image-decision said so. Runs in the
# pinned google-cloud-cli image (gcloud for the IAP tunnel) with the Packer of packer-binary.
# The Hugging Face token is optional: read at run time when its secret has a version, handed to
# Packer as PKR_VAR_huggingface_token (an environment variable), never on a command line.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
derive_names
require REGION ZONES
case "${USE_OS_LOGIN:-false}" in true | false) ;; *) die "USE_OS_LOGIN must be true or false" ;; esac

build=$(cat "${WORKSPACE}/build_image" 2>/dev/null || echo true)
if [ "${build}" != true ]; then
  echo "image up to date"
  exit 0
fi
PATH="${WORKSPACE}/bin:${PATH}"
export PATH
zone=$(echo "${ZONES}" | cut -d, -f1)
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
  -var "subnetwork=projects/${PROJECT_ID}/regions/${REGION}/subnetworks/${SUBNET_NAME}" \
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
