#!/usr/bin/env bash
# Starts ComfyUI once, exports its node catalogue (GET /object_info) to the jobs bucket, cleans up.
set -euo pipefail

: "${JOBS_BUCKET:?JOBS_BUCKET is required}"

readonly URL=http://127.0.0.1:8188
readonly WAIT_S=600  # the first start imports torch and every custom node
# FunctionSettings.catalogue_object (tests/test_deploy_wiring.py keeps them equal).
readonly CATALOGUE_OBJECT=catalogue/object_info.json
readonly OUT=/var/lib/comfyburst/object_info.json

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
gcloud storage cp --content-type=application/json "${OUT}" "gs://${JOBS_BUCKET}/${CATALOGUE_OBJECT}"
echo "exported ${node_count} node types to gs://${JOBS_BUCKET}/${CATALOGUE_OBJECT}"

# Nothing of the build VM's run stays in the image.
rm -rf /tmp/comfyburst-src /opt/comfyui/user/default/comfyui.log /opt/comfyui/temp/*
journalctl --rotate --vacuum-time=1s >/dev/null 2>&1 || true
