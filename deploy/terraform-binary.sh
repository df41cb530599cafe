#!/bin/sh
# Step "terraform-binary": runs in the pinned hashicorp/terraform image and copies its Terraform
# to /workspace/bin, so the test step evaluates the GPU class variables and their validations
# (tests/test_deploy_gpu_classes.py) with the Terraform that plans and applies.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

copy_binary terraform
