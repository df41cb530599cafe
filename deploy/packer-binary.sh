#!/bin/sh
# Step "packer-binary": runs in the pinned hashicorp/packer image and copies its Packer (a static
# Go binary) to /workspace/bin, so the bake step can run it next to gcloud (IAP tunnel).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

copy_binary packer
