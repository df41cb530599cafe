#!/usr/bin/env bash
# Fails the build early unless the NVIDIA driver sees the build VM's GPU.
set -euo pipefail

readonly WAIT_S=300  # Deep Learning VM images may still be loading the driver at first boot

deadline=$((SECONDS + WAIT_S))
until nvidia-smi >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    echo "nvidia-smi found no working GPU after ${WAIT_S}s; is a GPU attached and the image a CUDA image?" >&2
    exit 1
  fi
  sleep 5
done

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
gpu_count=$(nvidia-smi --list-gpus | wc -l)
if ((gpu_count < 1)); then
  echo "nvidia-smi lists no GPU" >&2
  exit 1
fi
echo "driver check passed: ${gpu_count} GPU(s)"
