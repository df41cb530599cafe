#!/usr/bin/env bash
# The model cache on the boot disk (it survives stop/start), wired into ComfyUI; optional pre-baked models.
set -euo pipefail

readonly CACHE_DIR=/var/lib/comfyburst/models
readonly COMFYUI_DIR=/opt/comfyui
readonly SERVICE_USER=comfyburst
# Every ModelKind in functions/comfyburst/schema.py (tests/test_deploy_wiring.py keeps them equal).
readonly MODEL_KINDS=(
  checkpoints loras vae controlnet upscale_models clip clip_vision text_encoders unet
  diffusion_models embeddings style_models hypernetworks gligen photomaker
)

{
  echo "# Written by the ComfyBurst image build: the worker's model cache, searched first."
  echo "comfyburst:"
  echo "  base_path: ${CACHE_DIR}"
  echo "  is_default: true"
  for kind in "${MODEL_KINDS[@]}"; do
    mkdir -p "${CACHE_DIR}/${kind}"
    echo "  ${kind}: ${kind}/"
  done
} >"${COMFYUI_DIR}/extra_model_paths.yaml"

# PREBAKED_MODELS: entries 'kind/filename url [sha256]' separated by ';' (public URLs only).
IFS=';' read -r -a entries <<<"${PREBAKED_MODELS:-}"
for entry in "${entries[@]}"; do
  read -r key url sha256 <<<"${entry}"
  [[ -z "${key:-}" ]] && continue
  kind="${key%%/*}"
  if [[ ! " ${MODEL_KINDS[*]} " == *" ${kind} "* || "${key}" == *..* || ! "${url:-}" =~ ^https:// ]]; then
    echo "bad pre-baked model entry: '${entry}'" >&2
    exit 1
  fi
  dest="${CACHE_DIR}/${key}"
  mkdir -p "$(dirname "${dest}")"
  auth=()
  if [[ -n "${HF_TOKEN:-}" && "${url}" =~ ^https://huggingface\.co/ ]]; then
    auth=(--header "Authorization: Bearer ${HF_TOKEN}")
  fi
  curl --fail --location --silent --show-error --retry 5 "${auth[@]}" --output "${dest}.part" "${url}"
  if [[ -n "${sha256:-}" ]]; then
    echo "${sha256}  ${dest}.part" | sha256sum --check --quiet -
  fi
  mv "${dest}.part" "${dest}"
  echo "pre-baked ${key}"
done

chown -R "${SERVICE_USER}:${SERVICE_USER}" /var/lib/comfyburst "${COMFYUI_DIR}/extra_model_paths.yaml"
echo "model cache ready in ${CACHE_DIR}"
