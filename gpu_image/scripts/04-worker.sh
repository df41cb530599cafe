#!/usr/bin/env bash
# The worker agent and the shared comfyburst package, pip-installed from the uploaded folders.
set -euo pipefail

: "${COMFYBURST_SRC:?COMFYBURST_SRC is required}"

readonly VENV=/opt/comfyburst/venv
readonly PYTHON_VERSION=3.12

uv venv --python "${PYTHON_VERSION}" "${VENV}"
# Both folders in one install, so the worker's dependency on `comfyburst` resolves to ours.
VIRTUAL_ENV="${VENV}" uv pip install "${COMFYBURST_SRC}/functions" "${COMFYBURST_SRC}/worker"

"${VENV}/bin/python" -c "import comfyburst, comfyburst_worker.settings"
test -x "${VENV}/bin/comfyburst-worker"
echo "worker agent installed in ${VENV}"
