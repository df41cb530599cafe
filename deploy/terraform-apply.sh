#!/bin/sh
# Step "terraform-apply": applies the saved plan when APPLY=true; otherwise stops after the plan.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
derive_names
APPLY="${APPLY:-true}"
case "${APPLY}" in true | false) ;; *) die "APPLY must be true or false" ;; esac

if [ "${APPLY}" != true ]; then
  echo "APPLY=${APPLY}: plan only"
  exit 0
fi
cd "${TF_DIR}" || exit 1
run terraform apply -input=false "${WORKSPACE}/tfplan"
