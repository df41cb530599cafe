"""The rehearsal's Debian root and what the image's scripts are fed from this machine.

Caches (under `build/bake/`, gitignored): the debootstrap tarball, the image's Python as a uv
download (this machine's CPython, made relocatable), so reruns download nothing but the
packages the scripts themselves install.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "bake"  # build/ is gitignored
SUITE = "bookworm"
# What the scripts apt-get install, up front so the tarball holds them (apt then finds them
# installed); the rest is what the rehearsal itself runs in the root.
PACKAGES = "git,python3-venv,curl,jq,nftables,sudo,ca-certificates,procps,iproute2,util-linux"
SRC_IN_ROOT = "/tmp/comfyburst-src"  # the template's upload folder
MNT = "/mnt/bake"  # this machine's Python, wheels and index, read-only in the root
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WORKFLOW = REPO / "examples" / "workflows" / "invert.json"


class RehearsalFailed(Exception):
    """A step of the rehearsal did not do what the image must."""


def work_dir() -> Path:
    """Where the rehearsal's root, logs and local cloud live (BAKE_WORK overrides)."""
    return Path(os.environ.get("BAKE_WORK", CACHE / "work")).resolve()


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(argv), flush=True)
    return subprocess.run(argv, check=True, text=True, **kwargs)  # type: ignore[call-overload]


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (BAKE_DEBIAN_MIRROR overrides)."""
    if os.environ.get("BAKE_DEBIAN_MIRROR"):
        return os.environ["BAKE_DEBIAN_MIRROR"]
    texts = [p.read_text() for p in Path("/etc/apt/sources.list.d").glob("*.sources")]
    for text in texts:
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split():
                return uris.group(1)
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        found = re.search(rf"^deb\s+(\S+)\s+{SUITE}\s", legacy.read_text(), re.M)
        if found:
            return found.group(1)
    raise SystemExit("no Debian mirror in this machine's apt sources; set BAKE_DEBIAN_MIRROR")


def fresh_root(root: Path) -> None:
    """A new Debian root from the cached debootstrap tarball (made once)."""
    mirror = debian_mirror()
    key = hashlib.sha256(f"{SUITE} {PACKAGES}".encode()).hexdigest()[:10]
    tarball = CACHE / f"debootstrap-{SUITE}-{key}.tgz"
    common = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}"]
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".part")
        run([*common, f"--make-tarball={partial}", SUITE, str(CACHE / "tarball-work"), mirror])
        partial.rename(tarball)
        shutil.rmtree(CACHE / "tarball-work", ignore_errors=True)
    if root.exists():
        shutil.rmtree(root)
    # The unpacked, configured root, so a rerun extracts it (seconds) instead of installing.
    pristine = tarball.with_name(tarball.name.replace(".tgz", "-root.tar"))
    if not pristine.exists():
        run(
            [*common, f"--unpack-tarball={tarball}", SUITE, str(root), mirror],
            stdout=subprocess.DEVNULL,
        )
        run(
            [
                "tar",
                "-C",
                str(root),
                "--numeric-owner",
                "-cf",
                str(pristine.with_suffix(".part")),
                ".",
            ]
        )
        pristine.with_suffix(".part").rename(pristine)
        return
    root.mkdir(parents=True)
    run(["tar", "-C", str(root), "--numeric-owner", "-xpf", str(pristine)])


def image_python() -> tuple[str, Path]:
    """This machine's CPython as a uv download: (its full version, the downloads JSON file).

    uv installs the image's Python from a download list; the rehearsal's list names one
    archive, this interpreter's install tree (no site-packages) with a relative library path.
    """
    version = ".".join(map(str, sys.version_info[:3]))
    out = CACHE / "python"
    archive = out / f"cpython-{version}-local.tar.gz"
    listing = out / "downloads.json"
    if not archive.exists():
        out.mkdir(parents=True, exist_ok=True)
        stage = out / "stage"
        shutil.rmtree(stage, ignore_errors=True)
        prefix = Path(sys.base_prefix)
        minor = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        skip = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "__pycache__"}
        shutil.copytree(
            prefix / "lib",
            stage / "python" / "lib",
            symlinks=True,
            ignore=lambda _d, names: [n for n in names if n in skip or n.endswith(".a")],
        )
        (stage / "python" / "lib" / minor / "site-packages").mkdir()
        (stage / "python" / "include").mkdir()
        shutil.copytree(prefix / "include", stage / "python" / "include", dirs_exist_ok=True)
        bin_dir = stage / "python" / "bin"
        bin_dir.mkdir()
        shutil.copy2(Path(sysconfig.get_config_var("BINDIR")) / minor, bin_dir / minor)
        for alias in ("python3", "python"):
            (bin_dir / alias).symlink_to(minor)
        if sysconfig.get_config_var("Py_ENABLE_SHARED"):
            run(["patchelf", "--set-rpath", "$ORIGIN/../lib", str(bin_dir / minor)])
        partial = archive.with_suffix(".part")
        with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
            tar.add(stage / "python", arcname="python")
        partial.rename(archive)
        shutil.rmtree(stage)
    sha256 = hashlib.sha256(archive.read_bytes()).hexdigest()
    major, minor_n, patch = sys.version_info[:3]
    entry = {
        "name": "cpython",
        "arch": {"family": os.uname().machine, "variant": None},
        "os": "linux",
        "libc": "gnu",
        "major": major,
        "minor": minor_n,
        "patch": patch,
        "prerelease": "",
        "url": f"file://{MNT}/python/{archive.name}",
        "sha256": sha256,
        "variant": None,
    }
    listing.write_text(json.dumps({f"cpython-{version}-linux-{os.uname().machine}-gnu": entry}))
    return version, listing


def bind(source: Path, target: Path, *, read_only: bool) -> None:
    target.mkdir(parents=True, exist_ok=True)
    run(["mount", "--bind", str(source), str(target)])
    if read_only:
        run(["mount", "-o", "remount,bind,ro", str(target)])


def mount_system(root: Path) -> None:
    """proc, sys, dev for the root (inside the rehearsal's private mount namespace)."""
    run(["mount", "-t", "proc", "proc", str(root / "proc")])
    run(["mount", "--rbind", "/sys", str(root / "sys")])
    run(["mount", "--rbind", "/dev", str(root / "dev")])
    run(["mount", "-t", "tmpfs", "tmpfs", str(root / "run")])


def stage_sources(root: Path) -> None:
    """What the template's file provisioners upload, at the same place."""
    src = root / SRC_IN_ROOT.lstrip("/")
    shutil.rmtree(src, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".pytest_cache")
    gpu = REPO / "gpu_image"
    shutil.copytree(REPO / "functions", src / "functions", ignore=ignore)
    shutil.copytree(gpu / "worker", src / "worker", ignore=ignore)
    shutil.copytree(gpu / "systemd", src / "systemd")
    shutil.copytree(gpu / "scripts", src / "scripts")
    shutil.copy2(gpu / "custom_nodes.txt", src / "custom_nodes.txt")
    shutil.copy2(gpu / "comfyui-constraints.txt", src / "comfyui-constraints.txt")


def standin_repo(work: Path) -> tuple[Path, str]:
    """A git repository laid out as ComfyUI (main.py, requirements.txt) serving the stand-in."""
    repo = work / "comfyui-standin.git"
    shutil.rmtree(repo, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(
        REPO / "localcloud" / "comfyui_standin",
        repo / "localcloud" / "comfyui_standin",
        ignore=ignore,
    )
    (repo / "localcloud" / "__init__.py").write_text("")
    # The stand-in validates prompts with the shared pre-flight, as the API does.
    shutil.copytree(REPO / "functions" / "comfyburst", repo / "comfyburst", ignore=ignore)
    shutil.copy2(Path(__file__).with_name("comfyui_main.py"), repo / "main.py")
    (repo / "requirements.txt").write_text("aiohttp\npillow\nnumpy\npydantic\n")
    for name in ("models", "input", "output"):
        (repo / name).mkdir(exist_ok=True)
        (repo / name / ".keep").write_text("")
    git = [
        "git",
        "-C",
        str(repo),
        "-c",
        "user.name=rehearsal",
        "-c",
        "user.email=rehearsal@localhost",
    ]
    run([*git, "init", "-q"])
    run([*git, "add", "-A"])
    run([*git, "commit", "-q", "-m", "ComfyUI stand-in for the bake rehearsal"])
    sha = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True)
    return repo, sha.stdout.strip()


def run_script(root: Path, script: str, env: Mapping[str, str], log: Path) -> int:
    """One provisioning script in the root, as its own process, as Packer runs it
    (`env VARS bash -euo pipefail SCRIPT` as root); output to the console and `log`."""
    words = [
        f"{k}={v}" for k, v in {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", **env}.items()
    ]
    argv = ["chroot", str(root), "/usr/bin/env", "-i", *words, "bash", "-euo", "pipefail", script]
    print(f"=== {script}", flush=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        for line in process.stdout:
            out.write(line)
            sys.stdout.buffer.write(line)
        sys.stdout.flush()
        return process.wait()
