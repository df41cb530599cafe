#!/usr/bin/env bash
# The worker agent and the shared comfyburst package, pip-installed from the uploaded folders,
# on the image's Python (02-comfyui.sh); readable by the worker's user only, checked as that user.
set -euo pipefail

: "${COMFYBURST_SRC:?COMFYBURST_SRC is required}"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${COMFYBURST_SRC}/scripts/common.sh"

uv venv --python "${PYTHON_VERSION}" "${WORKER_VENV}"
# The folders in one install, so `comfyburst-core` and `comfyburst` resolve to ours (core: the
# schema, states, errors and client; functions: the cloud side, without them).
VIRTUAL_ENV="${WORKER_VENV}" uv pip install "${COMFYBURST_SRC}/functions/core" "${COMFYBURST_SRC}/functions" "${COMFYBURST_SRC}/worker"

# ComfyUI's user (and so any custom node) cannot read the agent's code or settings.
chown -R "root:${WORKER_USER}" "${WORKER_VENV}"
chmod -R u=rwX,g=rX,o= "${WORKER_VENV}"

# Environment layers: written by the worker only, read by ComfyUI's group (a custom node cannot
# change another environment's code); the worker unit's COMFYBURST_WORKER_ENV_LAYERS_DIR. The
# layers folder may be crossed (not listed) by others: the build user reaches `builds/` only.
install -d -o "${WORKER_USER}" -g "${COMFYUI_USER}" -m 2751 "${ENV_LAYERS_DIR}"
install -d -o "${WORKER_USER}" -g "${COMFYUI_USER}" -m 2750 "${ENV_LAYERS_DIR}/cache"

# Build jobs build in `builds/` as the build user (env_build_as), who also deletes what it built;
# the worker only writes the archive the build streams out, beside it. Neither ComfyUI's user
# nor the worker can enter it.
install -d -o "${BUILD_USER}" -g "${BUILD_USER}" -m 0700 "${ENV_LAYERS_DIR}/builds"
chmod g-s "${ENV_LAYERS_DIR}/builds" # a new folder takes the layers folder's setgid bit

# As the user the unit runs it as: the interpreter the venv points at must be theirs to run.
as_user "${WORKER_USER}" "${WORKER_VENV}/bin/python" -c "import comfyburst, comfyburst_worker.settings"
as_user "${WORKER_USER}" test -x "${WORKER_VENV}/bin/comfyburst-worker"
echo "worker agent installed in ${WORKER_VENV} on $(readlink -f "${WORKER_VENV}/bin/python")"
