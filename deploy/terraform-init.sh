#!/bin/sh
# Step "terraform-init": state in TF_STATE_BUCKET (prefix NAME_PREFIX), the pipeline's values in
# terraform/pipeline.auto.tfvars. The backend is added here, so the module stays usable as a child
# module (examples/minimal).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
derive_names
require REGION ZONES TF_STATE_BUCKET
# SSH to the pool's VMs through IAP is for debugging: off unless the pipeline asks for it (the
# image build's VM has its own rule, terraform/network.tf iap_ssh_imager).
ALLOW_IAP_SSH="${ALLOW_IAP_SSH:-false}"
case "${ALLOW_IAP_SSH}" in true | false) ;; *) die "ALLOW_IAP_SSH must be true or false" ;; esac

quote_list() { echo "$1" | sed 's/[^,][^,]*/"&"/g'; }

cd "${TF_DIR}" || exit 1
printf 'terraform {\n  backend "gcs" {}\n}\n' >backend_override.tf
cat >pipeline.auto.tfvars <<EOT
project_id          = "${PROJECT_ID}"
region              = "${REGION}"
name_prefix         = "${NAME_PREFIX}"
gpu_image_family    = "${IMAGE_FAMILY}"
gpu_zones           = [$(quote_list "${ZONES}")]
api_invoker_members = [$(quote_list "${API_INVOKERS:-}")]
allow_iap_ssh       = ${ALLOW_IAP_SSH}
EOT
cp pipeline.auto.tfvars "${WORKSPACE}/pipeline.auto.tfvars"
run terraform init -input=false -backend-config="bucket=${TF_STATE_BUCKET}" \
  -backend-config="prefix=${NAME_PREFIX}"
