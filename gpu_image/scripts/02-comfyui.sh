#!/usr/bin/env bash
# ComfyUI at a pinned commit, its requirements and CUDA PyTorch in its own virtualenv.
set -euo pipefail

: "${COMFYUI_COMMIT:?COMFYUI_COMMIT is required}"
: "${TORCH_INDEX_URL:?TORCH_INDEX_URL is required}"

readonly COMFYUI_DIR=/opt/comfyui
readonly COMFYUI_REPO=https://github.com/comfyanonymous/ComfyUI.git
readonly SERVICE_USER=comfyburst
readonly PYTHON_VERSION=3.12
readonly UV_VERSION=0.13.8
readonly TORCH_PACKAGES=(torch==2.8.0 torchvision==0.23.0 torchaudio==2.8.0)
readonly TOOLS_DIR=/opt/comfyburst/tools
export UV_PYTHON_INSTALL_DIR=/opt/comfyburst/python

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q git python3-venv curl jq

# One service user runs ComfyUI and the worker: the worker writes ComfyUI's input and model folders.
if ! id "${SERVICE_USER}" >/dev/null 2>&1; then
  useradd --system --create-home --home-dir /var/lib/comfyburst --shell /usr/sbin/nologin "${SERVICE_USER}"
fi

# uv provides a Python the image's OS may lack (the agent needs >= 3.11) and fast installs.
/usr/bin/python3 -m venv "${TOOLS_DIR}"
"${TOOLS_DIR}/bin/pip" install --quiet "uv==${UV_VERSION}"
ln -sf "${TOOLS_DIR}/bin/uv" /usr/local/bin/uv
uv python install "${PYTHON_VERSION}"

mkdir -p "${COMFYUI_DIR}"
git -C "${COMFYUI_DIR}" init -q
git -C "${COMFYUI_DIR}" remote add origin "${COMFYUI_REPO}" 2>/dev/null || true
git -C "${COMFYUI_DIR}" fetch -q --depth 1 origin "${COMFYUI_COMMIT}"
git -C "${COMFYUI_DIR}" checkout -q --force FETCH_HEAD
actual=$(git -C "${COMFYUI_DIR}" rev-parse HEAD)
if [[ "${actual}" != "${COMFYUI_COMMIT}" ]]; then
  echo "ComfyUI is at ${actual}, expected ${COMFYUI_COMMIT}" >&2
  exit 1
fi

uv venv --python "${PYTHON_VERSION}" "${COMFYUI_DIR}/.venv"
VIRTUAL_ENV="${COMFYUI_DIR}/.venv" uv pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_PACKAGES[@]}"
VIRTUAL_ENV="${COMFYUI_DIR}/.venv" uv pip install -r "${COMFYUI_DIR}/requirements.txt"
"${COMFYUI_DIR}/.venv/bin/python" -c "import torch; assert torch.cuda.is_available(), 'CUDA not available'; print(torch.__version__, torch.cuda.get_device_name(0))"

mkdir -p "${COMFYUI_DIR}/input" "${COMFYUI_DIR}/output" "${COMFYUI_DIR}/temp" "${COMFYUI_DIR}/user"
chown -R "${SERVICE_USER}:${SERVICE_USER}" "${COMFYUI_DIR}"
echo "ComfyUI ${COMFYUI_COMMIT} installed in ${COMFYUI_DIR}"
