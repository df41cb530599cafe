#!/bin/sh
# Step "packer-binary": runs in the pinned hashicorp/packer image and copies its Packer (a static
# Go binary) to /workspace/bin, so the bake step can run it next to gcloud (IAP tunnel).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

packer=$(command -v packer || true)
if [ -z "${packer}" ]; then
  [ "${DRY_RUN}" = 1 ] || die "no packer in this image"
  packer=/bin/packer
fi
mkdir -p "${WORKSPACE}/bin"
run cp "${packer}" "${WORKSPACE}/bin/packer"
run "${WORKSPACE}/bin/packer" version
