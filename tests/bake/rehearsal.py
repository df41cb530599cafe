"""`make bake-rehearsal`: the image's provisioning scripts, unchanged, in a fresh Debian root,
then its systemd units as the users they name, with the local cloud, running one job.

Only the sources are switched, by the variables the scripts read: Python (this machine's, as a
uv download), torch (the CPU wheel on this disk), ComfyUI (COMFYUI_SRC, a local checkout, or
the ComfyUI stand-in laid out as ComfyUI). 01-driver-check.sh needs a GPU and is skipped.

Phases, in a private mount namespace (nothing stays mounted):
  1. provision: debootstrap root, 02..06 in a chroot, each as its own process (network: apt
     and the package index).
  2. in a network namespace of its own (loopback only, 169.254.169.254 on its `lo`): the local
     cloud; 07 exports the catalogue (a build-VM metadata server answers its token request);
     the user split is proven; one job runs on a VM whose guest boots the root's units; the
     worker claims it, outputs and the done flag land, the root powers off; the environment
     layers' rights are proven (sudoers, folders, ComfyUI's start with and without a layer).
BAKE_OLD_WORKER=1 runs 04-worker.sh as it was before the fix (the rehearsal must then fail).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.bake import _root
from tests.bake._root import MNT, REPO, SRC_IN_ROOT, RehearsalFailed, run, work_dir

OLD_WORKER_COMMIT = "375d0c9"  # 04-worker.sh before the shared env file
NETNS = f"comfyburst-bake-{os.getpid()}"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SCRIPTS = [
    "02-comfyui.sh",
    "03-custom-nodes.sh",
    "04-worker.sh",
    "05-systemd.sh",
    "06-model-cache.sh",
]


def script_env(root: Path, comfyui_repo: str, commit: str, python_version: str) -> dict[str, str]:
    """What Packer's environment_vars give every script, with this machine's sources."""
    return {
        "COMFYBURST_SRC": SRC_IN_ROOT,
        "COMFYUI_COMMIT": commit,
        "COMFYUI_REPO": comfyui_repo,
        "JOBS_BUCKET": "",
        "PREBAKED_MODELS": "",
        "HF_TOKEN": "",
        "PYTHON_VERSION": python_version,
        "UV_PYTHON_DOWNLOADS_JSON_URL": f"file://{MNT}/python/downloads.json",
        "TORCH_INDEX_URL": f"file://{MNT}/pypi/simple",
        "UV_FIND_LINKS": f"{MNT}/wheels",
        "TORCH_PACKAGES": os.environ.get("BAKE_TORCH_PACKAGES", "torch==2.13.0+cpu"),
        "TORCH_DEVICE": "cpu",
        # This machine's network may inspect TLS: its CA bundle is copied into the root.
        "SSL_CERT_FILE": CA_BUNDLE,
        "PIP_CERT": CA_BUNDLE,
    }


def provision(root: Path, log: Path) -> dict[str, str]:
    """Phase 1; returns the script env for phase 2."""
    work = work_dir()
    work.mkdir(parents=True, exist_ok=True)
    _root.fresh_root(root)
    python_version, listing = _root.image_python()
    _root.mount_system(root)
    _root.bind(listing.parent, root / MNT.lstrip("/") / "python", read_only=True)
    _root.bind(
        Path(os.environ.get("BAKE_WHEELS_DIR", "/opt/wheels")),
        root / MNT.lstrip("/") / "wheels",
        read_only=True,
    )
    _root.bind(
        Path(os.environ.get("BAKE_PYPI_DIR", "/opt/pypi")),
        root / MNT.lstrip("/") / "pypi",
        read_only=True,
    )
    if os.environ.get("COMFYUI_SRC"):
        source = Path(os.environ["COMFYUI_SRC"]).resolve()
        commit = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    else:
        source, commit = _root.standin_repo(work)
    _root.bind(source, root / "mnt" / "comfyui-src", read_only=True)
    shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")
    shutil.copy2(CA_BUNDLE, root / CA_BUNDLE.lstrip("/"))
    with open(root / "etc" / "hosts", "a") as hosts:
        hosts.write("169.254.169.254 metadata.google.internal metadata\n")
    standin = root / "usr" / "bin" / "systemctl"
    shutil.copy2(Path(__file__).with_name("systemctl_standin.py"), standin)
    standin.chmod(0o755)
    _root.stage_sources(root)
    if os.environ.get("BAKE_OLD_WORKER") == "1":
        old = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{OLD_WORKER_COMMIT}:gpu_image/scripts/04-worker.sh"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        # Only the Python source differs (this machine's version instead of 3.12), and the
        # package list is today's (functions/core came later): the env handling is the old one.
        old = old.replace("PYTHON_VERSION=3.12", f"PYTHON_VERSION={python_version}")
        today = (REPO / "gpu_image" / "scripts" / "04-worker.sh").read_text()
        packages = re.search(r"uv pip install (.+)$", today, re.M)
        assert packages is not None
        old = re.sub(
            r"uv pip install .+$", "uv pip install " + packages.group(1), old, count=1, flags=re.M
        )
        (root / SRC_IN_ROOT.lstrip("/") / "scripts" / "04-worker.sh").write_text(old)
        print("BAKE_OLD_WORKER=1: 04-worker.sh as of", OLD_WORKER_COMMIT, flush=True)
    env = script_env(root, "file:///mnt/comfyui-src", commit, python_version)
    print("=== 01-driver-check.sh skipped: it needs the build VM's GPU", flush=True)
    for script in SCRIPTS:
        code = _root.run_script(root, f"{SRC_IN_ROOT}/scripts/{script}", env, log)
        if code != 0:
            raise RehearsalFailed(f"{script} exited with {code}")
    check_no_periodic_apt(root)
    check_no_user_schedules(root)
    return env


def check_no_periodic_apt(root: Path) -> None:
    """The apt-daily timers and unattended-upgrades are masked in the root (05-systemd.sh) and
    apt's periodic runs configured off: no apt run competes with a cold start or swaps NVIDIA
    libraries under the loaded driver."""
    common = (REPO / "gpu_image" / "scripts" / "common.sh").read_text(encoding="utf-8")
    listed = re.search(r"APT_PERIODIC_UNITS=\(([^)]*)\)", common)
    conf = re.search(r"APT_PERIODIC_CONF=(\S+)", common)
    if listed is None or conf is None:
        raise RehearsalFailed("common.sh names no APT_PERIODIC_UNITS / APT_PERIODIC_CONF")
    units = listed.group(1).split()
    if not {"apt-daily.timer", "apt-daily-upgrade.timer", "unattended-upgrades.service"} <= set(
        units
    ):
        raise RehearsalFailed(f"APT_PERIODIC_UNITS misses a unit: {units}")
    for unit in units:
        path = root / "etc" / "systemd" / "system" / unit
        if not path.is_symlink() or os.readlink(path) != "/dev/null":
            raise RehearsalFailed(f"{unit} is not masked in the image")
    text = (root / conf.group(1).lstrip("/")).read_text(encoding="utf-8")
    for key in ("APT::Periodic::Update-Package-Lists", "APT::Periodic::Unattended-Upgrade"):
        if f'{key} "0";' not in text:
            raise RehearsalFailed(f"{conf.group(1)} does not set {key} to 0")
    shipped = [u for u in units if (root / "usr" / "lib" / "systemd" / "system" / u).exists()]
    print(f"=== periodic apt masked: {units} (the root's apt ships {shipped})", flush=True)


def check_no_user_schedules(root: Path) -> None:
    """Only root may use cron and at in the image (05-systemd.sh): ComfyUI's user (pack code)
    cannot schedule what outlives comfyui.service's restarts."""
    for name in ("cron.allow", "at.allow"):
        path = root / "etc" / name
        users = path.read_text(encoding="utf-8").split() if path.is_file() else None
        if users != ["root"]:
            raise RehearsalFailed(f"/etc/{name} must list root only, not {users}")
    print("=== cron and at: root only", flush=True)


def _end_netns() -> None:
    """Stop whatever still runs in the rehearsal's network namespace (by pid), then remove it."""
    listed = subprocess.run(
        ["ip", "netns", "pids", NETNS], capture_output=True, text=True, check=False
    )
    for pid in listed.stdout.split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", NETNS], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bake.rehearsal")
    parser.add_argument("--phase", choices=["all", "run"], default="all")
    parser.add_argument("--env-json", help="phase 2: the script env from phase 1")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("the bake rehearsal needs root (debootstrap, chroot, mounts, netns)")
    root = work_dir() / "root"
    log = work_dir() / "provision.log"
    if args.phase == "run":
        from tests.bake._run import run_phase

        return run_phase(root, json.loads(args.env_json))
    if os.environ.get("BAKE_IN_MOUNT_NS") != "1":
        # Everything mounted below goes away with this namespace, whatever happens.
        os.environ["BAKE_IN_MOUNT_NS"] = "1"
        unshare = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "tests.bake.rehearsal",
        ]
        return subprocess.run([*unshare, *(argv or sys.argv[1:])], check=False).returncode
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    try:
        env = provision(root, log)
        print(f"=== provisioned in {time.monotonic() - started:.0f}s", flush=True)
        run(["ip", "netns", "add", NETNS])
        try:
            phase2 = [
                "ip",
                "netns",
                "exec",
                NETNS,
                sys.executable,
                "-m",
                "tests.bake.rehearsal",
                "--phase",
                "run",
                "--env-json",
                json.dumps(env),
            ]
            code = subprocess.run(phase2, check=False).returncode
        finally:
            _end_netns()
    except RehearsalFailed as exc:
        print(f"BAKE REHEARSAL FAILED: {exc}", flush=True)
        return 1
    verdict = "PASSED" if code == 0 else "FAILED"
    print(f"BAKE REHEARSAL {verdict} in {time.monotonic() - started:.0f}s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
