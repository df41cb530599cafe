#!/usr/bin/env bash
# The worker's model store and the running job's model view (ComfyUI's extra model path), on the
# boot disk (it survives stop/start); optional pre-baked models in ComfyUI's own models folder.
set -euo pipefail

: "${COMFYBURST_SRC:?COMFYBURST_SRC is required}"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${COMFYBURST_SRC}/scripts/common.sh"

# Every ModelKind in functions/comfyburst/schema.py (tests/test_deploy_wiring.py keeps them equal).
readonly MODEL_KINDS=(
  checkpoints loras vae controlnet upscale_models clip clip_vision text_encoders unet
  diffusion_models embeddings style_models hypernetworks gligen photomaker
)

# The worker writes, ComfyUI (group) only reads: a custom node cannot plant a model.
for dir in "${MODELS_ROOT}" "${MODEL_STORE_DIR}" "${JOB_MODELS_DIR}"; do
  install -d -o "${WORKER_USER}" -g "${COMFYUI_USER}" -m 2750 "${dir}"
done

{
  echo "# Written by the ComfyBurst image build: the running job's models, searched first."
  echo "comfyburst:"
  echo "  base_path: ${JOB_MODELS_DIR}"
  echo "  is_default: true"
  for kind in "${MODEL_KINDS[@]}"; do
    install -d -o "${WORKER_USER}" -g "${COMFYUI_USER}" -m 2750 "${JOB_MODELS_DIR}/${kind}"
    echo "  ${kind}: ${kind}/"
  done
} >"${COMFYUI_DIR}/extra_model_paths.yaml"
chmod 0644 "${COMFYUI_DIR}/extra_model_paths.yaml"

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
  dest="${COMFYUI_DIR}/models/${key}"
  mkdir -p "$(dirname "${dest}")"
  auth=()
  if [[ -n "${HF_TOKEN:-}" && "${url}" =~ ^https://huggingface\.co/ ]]; then
    # From stdin, so the token is on no command line.
    auth=(--header @-)
  fi
  printf 'Authorization: Bearer %s\n' "${HF_TOKEN:-}" |
    curl --fail --location --silent --show-error --retry 5 "${auth[@]}" --output "${dest}.part" "${url}"
  if [[ -n "${sha256:-}" ]]; then
    echo "${sha256}  ${dest}.part" | sha256sum --check --quiet -
  fi
  mv "${dest}.part" "${dest}"
  chmod 0644 "${dest}"
  echo "pre-baked ${key}"
done
echo "model store ready in ${MODELS_ROOT}"
