#!/bin/sh
# Step "terraform-bootstrap": on a first deployment (no image in the family yet) create only what
# the image build needs: APIs, service accounts and their grants, the pool network with NAT and
# the image build's IAP SSH rule, the jobs bucket; its apply also writes the output
# image_builder that deploy/bake.sh reads. (-target is Terraform's tool for exactly such a first
# step.) TF_TARGET_PREFIX="module.comfyburst." runs it in a root that calls the module
# (terraform/examples/*, with TF_DIR pointing there).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
derive_names

exists=$(cat "${WORKSPACE}/image_exists" 2>/dev/null || echo false)
if [ "${exists}" = true ]; then
  echo "image family ${IMAGE_FAMILY} exists: no bootstrap needed"
  exit 0
fi
cd "${TF_DIR}" || exit 1
p="${TF_TARGET_PREFIX:-}"
case "${p}" in "" | module.*.) ;; *) die "TF_TARGET_PREFIX must be empty or module.<name>." ;; esac
run terraform apply -input=false -auto-approve \
  -target="${p}google_project_service.required" \
  -target="${p}google_service_account.sa" \
  -target="${p}google_project_iam_member.log_writer" \
  -target="${p}google_project_iam_member.metric_writer" \
  -target="${p}google_storage_bucket_iam_member.imager_catalogue" \
  -target="${p}google_compute_router_nat.pool" \
  -target="${p}google_compute_firewall.iap_ssh_imager"
