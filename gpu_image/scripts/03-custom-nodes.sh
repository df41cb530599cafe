#!/usr/bin/env bash
# Custom nodes from custom_nodes.txt, each at its pinned commit, requirements in ComfyUI's venv.
set -euo pipefail

: "${COMFYBURST_SRC:?COMFYBURST_SRC is required}"

readonly COMFYUI_DIR=/opt/comfyui
readonly LIST="${COMFYBURST_SRC}/custom_nodes.txt"
readonly SERVICE_USER=comfyburst

installed=0
while read -r name url commit rest; do
  # Blank lines and comments carry no node.
  [[ -z "${name}" || "${name}" == \#* ]] && continue
  if [[ -n "${rest}" || ! "${commit}" =~ ^[0-9a-f]{40}$ || ! "${url}" =~ ^https:// ]]; then
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
    VIRTUAL_ENV="${COMFYUI_DIR}/.venv" uv pip install -r "${target}/requirements.txt"
  fi
  installed=$((installed + 1))
done <"${LIST}"

chown -R "${SERVICE_USER}:${SERVICE_USER}" "${COMFYUI_DIR}/custom_nodes"
echo "installed ${installed} custom node package(s)"
