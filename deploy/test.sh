#!/bin/sh
# Step "test": lint, unit and emulator tests and the offline deploy checks: `make test`.
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

cd "${REPO_ROOT}" || exit 1
# The emulators image has gcloud's Firestore/Pub/Sub emulators and Debian; Python's venv and make
# come from Debian. /workspace/bin holds the pinned Packer (step packer-binary).
if [ "${DRY_RUN}" != 1 ] && ! { command -v make && python3 -c "import ensurepip"; } >/dev/null 2>&1; then
  apt-get update -q && apt-get install -y -q python3-venv make
fi
PATH="${WORKSPACE}/bin:${PATH}"
export PATH
# The pinned googlecompute plugin, so `packer validate` checks the template itself.
run packer init gpu_image
# Exactly `make test` (tests that need a real ComfyUI skip themselves: COMFYUI_URL is unset).
run make test
