#!/usr/bin/env bash
# systemd units: ComfyUI on 127.0.0.1:8188, the worker after it; both start at every boot.
set -euo pipefail

: "${COMFYBURST_SRC:?COMFYBURST_SRC is required}"

readonly SERVICE_USER=comfyburst

install -m 0644 "${COMFYBURST_SRC}/systemd/comfyui.service" /etc/systemd/system/comfyui.service
install -m 0644 "${COMFYBURST_SRC}/systemd/comfyburst-worker.service" /etc/systemd/system/comfyburst-worker.service

# The worker powers the VM off when the queue is empty, and may do nothing else as root.
printf '%s ALL=(root) NOPASSWD: /usr/bin/systemctl poweroff\n' "${SERVICE_USER}" >/etc/sudoers.d/comfyburst-poweroff
chmod 0440 /etc/sudoers.d/comfyburst-poweroff
visudo -cf /etc/sudoers.d/comfyburst-poweroff

systemctl daemon-reload
systemctl enable comfyui.service comfyburst-worker.service
echo "units installed and enabled"
