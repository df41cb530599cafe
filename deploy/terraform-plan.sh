#!/bin/sh
# Step "terraform-plan": the saved plan the apply step applies (nothing else is applied).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
derive_names

cd "${TF_DIR}" || exit 1
run terraform plan -input=false -out="${WORKSPACE}/tfplan"
