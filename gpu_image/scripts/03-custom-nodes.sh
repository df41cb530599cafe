#!/usr/bin/env bash
# Custom nodes from custom_nodes.txt, each at its pinned commit, requirements in ComfyUI's venv
# (held to the same constraints as ComfyUI's). Their code is root's; they run as ComfyUI's user.
set -euo pipefail

: "${COMFYBURST_SRC:?COMFYBURST_SRC is required}"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${COMFYBURST_SRC}/scripts/common.sh"

readonly LIST="${COMFYBURST_SRC}/custom_nodes.txt"
readonly CONSTRAINTS="${COMFYBURST_SRC}/comfyui-constraints.txt"

installed=0
while read -r name url commit rest; do
  # Blank lines and comments carry no node.
  [[ -z "${name}" || "${name}" == \#* ]] && continue
  if [[ -n "${rest}" || ! "${name}" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ || ! "${commit}" =~ ^[0-9a-f]{40}$ || ! "${url}" =~ ^https:// ]]; then
    echo "bad line in custom_nodes.txt: '${name} ${url} ${commit} ${rest}'" >&2
    exit 1
  fi
  target="${COMFYUI_DIR}/custom_nodes/${name}"
  mkdir -p "${target}"
  git -C "${target}" init -q
  git -C "${target}" remote add origin "${url}" 2>/dev/null || true
  git -C "${target}" fetch -q --depth 1 origin "${commit}"
  git -C "${target}" checkout -q --force FETCH_HEAD
  if [[ -f "${target}/requirements.txt" ]]; then
    VIRTUAL_ENV="${COMFYUI_DIR}/.venv" uv pip install -r "${target}/requirements.txt" -c "${CONSTRAINTS}"
  fi
  installed=$((installed + 1))
done <"${LIST}"

mkdir -p "${COMFYUI_DIR}/custom_nodes"
chown -R root:root "${COMFYUI_DIR}/custom_nodes"
echo "installed ${installed} custom node package(s)"
