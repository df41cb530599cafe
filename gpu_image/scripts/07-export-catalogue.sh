#!/usr/bin/env bash
# Starts ComfyUI once, exports its node catalogue (GET /object_info) to the jobs bucket, cleans up.
set -euo pipefail

: "${COMFYBURST_SRC:?COMFYBURST_SRC is required}"
: "${JOBS_BUCKET:?JOBS_BUCKET is required}"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${COMFYBURST_SRC}/scripts/common.sh"

# Sources (the bake rehearsal points the storage API at its local stand-in).
readonly STORAGE_API_URL="${STORAGE_API_URL:-https://storage.googleapis.com}"
readonly METADATA_URL=http://metadata.google.internal/computeMetadata/v1
readonly URL=http://127.0.0.1:8188
readonly WAIT_S=600  # the first start imports torch and every custom node
# FunctionSettings.catalogue_object (tests/test_deploy_wiring.py keeps them equal).
readonly CATALOGUE_OBJECT=catalogue/object_info.json
readonly CATALOGUE_OBJECT_ESCAPED=catalogue%2Fobject_info.json
readonly OUT="${WORKER_HOME}/object_info.json"

systemctl start comfyui.service
deadline=$((SECONDS + WAIT_S))
until curl --fail --silent --output "${OUT}" "${URL}/object_info"; do
  if ((SECONDS >= deadline)) || ! systemctl is-active --quiet comfyui.service; then
    journalctl -u comfyui.service --no-pager -n 200 >&2 || true
    echo "ComfyUI did not answer /object_info within ${WAIT_S}s" >&2
    exit 1
  fi
  sleep 2
done
systemctl stop comfyui.service

node_count=$(jq 'length' "${OUT}")
if ((node_count < 1)); then
  echo "/object_info listed no nodes" >&2
  exit 1
fi
# One media upload of one object (storage.objects.create on catalogue/ is all it needs; no
# listing). The build VM's token comes from its metadata server and goes to curl on stdin.
token=$(curl --fail --silent --show-error --header "Metadata-Flavor: Google" \
  "${METADATA_URL}/instance/service-accounts/default/token" | jq -r .access_token)
printf 'Authorization: Bearer %s\n' "${token}" |
  curl --fail --silent --show-error --output /dev/null --header @- \
    --header "Content-Type: application/json" --data-binary "@${OUT}" \
    "${STORAGE_API_URL}/upload/storage/v1/b/${JOBS_BUCKET}/o?uploadType=media&name=${CATALOGUE_OBJECT_ESCAPED}"
echo "exported ${node_count} node types to gs://${JOBS_BUCKET}/${CATALOGUE_OBJECT}"

# Nothing of the build VM's run stays in the image.
rm -rf "${COMFYBURST_SRC}" "${UV_CACHE_DIR}" "${OUT}" "${COMFYUI_DIR}/user/default/comfyui.log"
find "${COMFYUI_DIR}/temp" "${COMFYUI_DIR}/output" -mindepth 1 -delete
journalctl --rotate --vacuum-time=1s >/dev/null 2>&1 || true
