#!/bin/sh
# Step "image-decision": bake when the image's source_hash label differs from gpu_image/ +
# functions/ (BUILD_IMAGE=auto), or when told (true/false). Writes to the workspace:
# source_hash, image_exists (true/false), build_image (true/false).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
derive_names
BUILD_IMAGE="${BUILD_IMAGE:-auto}"
case "${BUILD_IMAGE}" in auto | true | false) ;; *) die "BUILD_IMAGE must be auto, true or false" ;; esac

cd "${REPO_ROOT}" || exit 1
hash=$(find gpu_image functions -type f -not -path '*/__pycache__/*' -not -name '*.pyc' \
  -not -path '*.egg-info/*' -not -name manifest.json -print0 | LC_ALL=C sort -z \
  | xargs -0 sha256sum | sha256sum | cut -c1-32)
echo "${hash}" >"${WORKSPACE}/source_hash"

current=""
if [ "${DRY_RUN}" = 1 ]; then
  run gcloud compute images describe-from-family "${IMAGE_FAMILY}" --project "${PROJECT_ID}" \
    --format='value(labels.source_hash)'
else
  current=$(gcloud compute images describe-from-family "${IMAGE_FAMILY}" --project "${PROJECT_ID}" \
    --format='value(labels.source_hash)' 2>/dev/null || true)
fi
if [ -n "${current}" ]; then echo true >"${WORKSPACE}/image_exists"; else echo false >"${WORKSPACE}/image_exists"; fi

case "${BUILD_IMAGE}" in
  true | false) build="${BUILD_IMAGE}" ;;
  *) if [ "${current}" = "${hash}" ]; then build=false; else build=true; fi ;;
esac
echo "${build}" >"${WORKSPACE}/build_image"
echo "image family ${IMAGE_FAMILY}: source hash ${hash}, latest image has '${current}', build=${build}"
