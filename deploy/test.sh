#!/bin/sh
# Step "test": lint, unit and emulator tests and the offline deploy checks, as `make test` runs
# them (tests that need a real ComfyUI are left out: the pipeline has none).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

cd "${REPO_ROOT}" || exit 1
# The emulators image has gcloud's Firestore/Pub/Sub emulators and Debian; Python's venv and make
# come from Debian. /workspace/bin holds the pinned Packer (step packer-binary).
if [ "${DRY_RUN}" != 1 ] && ! command -v make >/dev/null 2>&1; then
  apt-get update -q && apt-get install -y -q python3-venv make
fi
PATH="${WORKSPACE}/bin:${PATH}"
export PATH
run make venv lint deploy-tools
run packer init gpu_image
run .venv/bin/pytest -m "not real_comfyui"
