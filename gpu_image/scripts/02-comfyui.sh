#!/usr/bin/env bash
# The service users and the build user, uv and the image's Python, ComfyUI at a pinned commit with CUDA PyTorch
# and its requirements (held to comfyui-constraints.txt) in its own virtualenv.
set -euo pipefail

: "${COMFYBURST_SRC:?COMFYBURST_SRC is required}"
: "${COMFYUI_COMMIT:?COMFYUI_COMMIT is required}"
: "${TORCH_INDEX_URL:?TORCH_INDEX_URL is required}"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${COMFYBURST_SRC}/scripts/common.sh"

# Sources (the bake rehearsal points them at this machine's copies).
readonly COMFYUI_REPO="${COMFYUI_REPO:-https://github.com/comfyanonymous/ComfyUI.git}"
read -r -a TORCH_PACKAGES <<<"${TORCH_PACKAGES:-torch==2.8.0 torchvision==0.23.0 torchaudio==2.8.0}"
readonly TORCH_DEVICE="${TORCH_DEVICE:-cuda}"  # what the import check below demands
readonly CONSTRAINTS="${COMFYBURST_SRC}/comfyui-constraints.txt"

apt_get update
apt_get install -y git python3-venv curl jq nftables sudo

# ComfyUI's user owns only ComfyUI's working folders; the worker joins its group. Neither it
# nor the build user has a home on disk where pack code could leave files for later code.
if ! getent group "${COMFYUI_USER}" >/dev/null; then
  groupadd --system "${COMFYUI_USER}"
fi
if ! id "${COMFYUI_USER}" >/dev/null 2>&1; then
  useradd --system --gid "${COMFYUI_USER}" --no-create-home --home-dir "${NO_HOME}" \
    --shell /usr/sbin/nologin "${COMFYUI_USER}"
fi
if ! id "${BUILD_USER}" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir "${NO_HOME}" \
    --shell /usr/sbin/nologin "${BUILD_USER}"
fi
if ! id "${WORKER_USER}" >/dev/null 2>&1; then
  useradd --system --user-group --groups "${COMFYUI_USER}" --create-home --home-dir "${WORKER_HOME}" \
    --shell /usr/sbin/nologin "${WORKER_USER}"
fi
usermod --append --groups "${COMFYUI_USER}" "${WORKER_USER}"
chmod 0700 "${WORKER_HOME}"

# uv provides a Python the image's OS may lack (the agent needs >= 3.11) and fast installs.
/usr/bin/python3 -m venv "${TOOLS_DIR}"
"${TOOLS_DIR}/bin/pip" install --quiet "pip==${PIP_VERSION}" "uv==${UV_VERSION}"
ln -sf "${TOOLS_DIR}/bin/uv" /usr/local/bin/uv
uv python install --no-bin "${PYTHON_VERSION}"
chmod -R a+rX "${UV_PYTHON_INSTALL_DIR}"

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

# torch from its own index first, then ComfyUI's requirements held to the versions of its
# release (and to the torch just installed), so a rebuild resolves the same set.
torch_pins=$(mktemp)
printf '%s\n' "${TORCH_PACKAGES[@]}" >"${torch_pins}"
uv venv --python "${PYTHON_VERSION}" "${COMFYUI_DIR}/.venv"
VIRTUAL_ENV="${COMFYUI_DIR}/.venv" uv pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_PACKAGES[@]}"
VIRTUAL_ENV="${COMFYUI_DIR}/.venv" uv pip install -r "${COMFYUI_DIR}/requirements.txt" \
  -c "${CONSTRAINTS}" -c "${torch_pins}"
rm -f "${torch_pins}"

# Code stays root's: a custom node cannot rewrite ComfyUI. Only the working folders are
# ComfyUI's, group-writable and setgid so the worker (in the group) shares them. Its user
# directory and database live in its private home (comfyui.service), not here.
chown -R root:root "${COMFYUI_DIR}"
for dir in input output temp; do
  install -d -o "${COMFYUI_USER}" -g "${COMFYUI_USER}" -m 2770 "${COMFYUI_DIR}/${dir}"
done

check='import torch; print("torch", torch.__version__)'
if [[ "${TORCH_DEVICE}" == cuda ]]; then
  check='import torch; assert torch.cuda.is_available(), "CUDA not available"; print(torch.__version__, torch.cuda.get_device_name(0))'
fi
as_user "${COMFYUI_USER}" "${COMFYUI_DIR}/.venv/bin/python" -c "${check}"
echo "ComfyUI ${COMFYUI_COMMIT} installed in ${COMFYUI_DIR}"
