#!/usr/bin/env bash
# The NVIDIA driver of the Deep Learning VM base image: the build VM asks for it with the
# metadata install-nvidia-driver=True (image.pkr.hcl), and the image installs it at first boot.
# Fails the build unless that driver sees the build VM's GPU and its kernel module is the
# version of its libraries, then holds the driver's packages: no apt run (ours or an unattended
# one) may replace the libraries under the loaded module ("Driver/library version mismatch").
set -euo pipefail

: "${COMFYBURST_SRC:?COMFYBURST_SRC is required}"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${COMFYBURST_SRC}/scripts/common.sh"

readonly WAIT_S=300 # Deep Learning VM images may still be installing the driver at first boot
readonly POLL_S=5
# The loaded kernel module's version line ("NVRM version: ... Kernel Module  570.xx ...").
readonly MODULE_VERSION_FILE="${NVIDIA_MODULE_VERSION_FILE:-/proc/driver/nvidia/version}"
# The driver's packages (Ubuntu's and NVIDIA's repositories name them by the driver's major
# version): the module, its utilities and its user-space libraries, e.g. nvidia-driver-570,
# libnvidia-compute-570, nvidia-utils-570-server, cuda-drivers-570.
driver_packages() {
  local major="$1"
  printf '^((lib)?nvidia-.*|xserver-xorg-video-nvidia|cuda-drivers)-%s(-server|-open)?$' "${major}"
}

deadline=$((SECONDS + WAIT_S))
until nvidia-smi >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    echo "nvidia-smi found no working GPU after ${WAIT_S}s; is a GPU attached, the image a" \
      "Deep Learning VM image and its metadata install-nvidia-driver=True?" >&2
    exit 1
  fi
  sleep "${POLL_S}"
done

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
gpu_count=$(nvidia-smi --list-gpus | wc -l)
if ((gpu_count < 1)); then
  echo "nvidia-smi lists no GPU" >&2
  exit 1
fi

driver_version=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -n 1)
module_version=$(sed -n 's/.*Kernel Module[^0-9]*\([0-9][0-9.]*\).*/\1/p' "${MODULE_VERSION_FILE}")
if [[ -z "${module_version}" || "${module_version}" != "${driver_version}" ]]; then
  echo "kernel module ${module_version:-unknown} is not the driver's ${driver_version}" >&2
  exit 1
fi

# shellcheck disable=SC2016  # ${db:Status-Abbrev} is dpkg-query's field, not the shell's
mapfile -t packages < <(
  dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' |
    awk -v pattern="$(driver_packages "${driver_version%%.*}")" '$1 == "ii" && $2 ~ pattern { print $2 }'
)
if ((${#packages[@]} == 0)); then
  echo "driver ${driver_version} is not from apt packages: apt has nothing of it to replace"
else
  apt-mark hold "${packages[@]}" >/dev/null
  held=$(apt-mark showhold)
  for package in "${packages[@]}"; do
    if ! grep -qx "${package}" <<<"${held}"; then
      echo "apt-mark did not hold ${package}" >&2
      exit 1
    fi
  done
  echo "held ${#packages[@]} driver package(s): ${packages[*]}"
fi
echo "driver check passed: ${gpu_count} GPU(s), driver ${driver_version}"
