#!/bin/sh
# Step "terraform-bootstrap": on a first deployment (no image in the family yet) create only what
# the image build needs: APIs, service accounts and their grants, the pool network with NAT and
# the IAP SSH rule, the jobs bucket. (-target is Terraform's tool for exactly such a first step.)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
derive_names

exists=$(cat "${WORKSPACE}/image_exists" 2>/dev/null || echo false)
if [ "${exists}" = true ]; then
  echo "image family ${IMAGE_FAMILY} exists: no bootstrap needed"
  exit 0
fi
cd "${TF_DIR}" || exit 1
run terraform apply -input=false -auto-approve \
  -target=google_project_service.required \
  -target=google_service_account.sa \
  -target=google_project_iam_member.log_writer \
  -target=google_project_iam_member.metric_writer \
  -target=google_storage_bucket_iam_member.imager_catalogue \
  -target=google_compute_router_nat.pool \
  -target=google_compute_firewall.iap_ssh
