#!/usr/bin/env bash
# systemd units: the metadata guard, ComfyUI on 127.0.0.1:8188 as its own user, the worker after
# it; all start at every boot. The worker may power the VM off and restart ComfyUI (switching its
# environment), and do nothing else as root.
set -euo pipefail

: "${COMFYBURST_SRC:?COMFYBURST_SRC is required}"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "${COMFYBURST_SRC}/scripts/common.sh"

readonly UNITS=(comfyburst-metadata-guard.service comfyui.service comfyburst-worker.service)

for unit in "${UNITS[@]}"; do
  install -m 0644 "${COMFYBURST_SRC}/systemd/${unit}" "/etc/systemd/system/${unit}"
done
# The owner-match rule that keeps ComfyUI's user (every custom node) off the metadata server.
install -d -m 0755 "${GUARD_DIR}"
install -m 0644 "${COMFYBURST_SRC}/systemd/metadata-guard.nft" "${GUARD_DIR}/metadata-guard.nft"
nft --check --file "${GUARD_DIR}/metadata-guard.nft"

printf '%s ALL=(root) NOPASSWD: /usr/bin/systemctl poweroff\n' "${WORKER_USER}" >/etc/sudoers.d/comfyburst-poweroff
chmod 0440 /etc/sudoers.d/comfyburst-poweroff
visudo -cf /etc/sudoers.d/comfyburst-poweroff

# Environments: ComfyUI's start reads the worker's active layer file (comfyui_start.py); the
# runtime folders are made at every boot (tmpfiles.d); the worker may restart comfyui.service
# and run builds as the build user, nothing more (the sudoers drop-in).
install -d -m 0755 "$(dirname "${COMFYUI_START}")" /etc/tmpfiles.d
install -m 0644 "${COMFYBURST_SRC}/systemd/comfyui_start.py" "${COMFYUI_START}"
install -m 0644 "${COMFYBURST_SRC}/systemd/comfyburst.tmpfiles.conf" /etc/tmpfiles.d/comfyburst.conf
install -m 0440 "${COMFYBURST_SRC}/systemd/comfyburst-environments.sudoers" \
  /etc/sudoers.d/comfyburst-environments
visudo -cf /etc/sudoers.d/comfyburst-environments
if command -v systemd-tmpfiles >/dev/null; then
  # This boot's folders too (the build VM starts ComfyUI in 07-export-catalogue.sh).
  systemd-tmpfiles --create /etc/tmpfiles.d/comfyburst.conf
fi

# No apt run after a boot: the apt-daily timers and unattended-upgrades would compete with the
# cold start for CPU, disk and the dpkg lock, and could replace NVIDIA libraries under the loaded
# driver (01-driver-check.sh also holds its packages). Masked as `systemctl mask` does it, the
# unit linked to /dev/null (which also works in the bake rehearsal's chroot), and apt's periodic
# runs configured off for anything that calls apt.systemd.daily by other means.
for unit in "${APT_PERIODIC_UNITS[@]}"; do
  ln -sfn /dev/null "/etc/systemd/system/${unit}"
done
printf '%s\n' 'APT::Periodic::Update-Package-Lists "0";' 'APT::Periodic::Unattended-Upgrade "0";' \
  >"${APT_PERIODIC_CONF}"

# Pack code runs as ComfyUI's user or the build user and must not outlive its process: a crontab
# or at job would run on outside comfyui.service (a restart kills only its cgroup) and after the
# build (whose user's processes the worker kills) into other callers' jobs and builds.
# Debian's and Ubuntu's cron and at let every user schedule unless an allow file exists.
for allow in /etc/cron.allow /etc/at.allow; do
  printf 'root\n' >"${allow}"
  chmod 0644 "${allow}"
done

systemctl daemon-reload
systemctl enable "${UNITS[@]}"
echo "units installed and enabled"
