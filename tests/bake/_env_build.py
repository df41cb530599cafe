"""Phase 2 of the bake rehearsal: one environment build in the booted root, as the image's
users. The worker (`comfyburst`, its unit's settings) runs a build job of a pack served by a
loopback git server, with a local wheel for the pack's requirement: the pack's code runs as
`comfyburst-build` in `builds/`, pip is the tools venv's, the archive's files are that user's,
the build folder is gone afterwards and ComfyUI's venv is unchanged. The pack's import starts a
detached `sleep 600` and leaves a file in /tmp and /dev/shm: after the build the process is
dead (the worker's kill of every process of the build user) and the files are gone.

The build runs in a PID namespace of its own: the kill (pid -1, as the build user's uid) then
reaches only the processes of this build, whatever runs as that uid on the machine running the
rehearsal.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from tests._env_pack_support import (
    DOUBLE_PACK,
    NODE_TYPE,
    git_http_server,
    make_wheelhouse,
    serve_pack,
)
from tests.bake._as_user import as_user
from tests.bake._root import RehearsalFailed
from tests.bake.systemctl_standin import environment, parse_unit_text

ENV_ID = "env-" + "5a" * 32
MATERIAL = "tmp/comfyburst-env-rehearsal"  # in the root, readable by everyone
BLOBS = "/var/lib/comfyburst/rehearsal-blobs"  # the worker's: a stand-in for the bucket
LAYERS = "/var/lib/comfyburst-environments"
BASE_VENV = "opt/comfyui/.venv"
BUILD_USER = "comfyburst-build"
# What the pack leaves behind on purpose (the pid file in a folder of root's, which the clean-up
# of the build user's files leaves alone).
SPAWNED = f"/{MATERIAL}/spawned"
PLANTED = ("/tmp/comfyburst-rehearsal-planted", "/dev/shm/comfyburst-rehearsal-planted")
# The default pack, which also leaves behind on purpose a detached process, and files for
# whoever comes next.
_PACK = (
    DOUBLE_PACK
    + f"""
import subprocess

_quiet = subprocess.DEVNULL
_left = subprocess.Popen(
    ['sleep', '600'], start_new_session=True, stdin=_quiet, stdout=_quiet, stderr=_quiet
)
with open('{SPAWNED}/pid', 'w') as stream:
    stream.write(str(_left.pid))
for path in {PLANTED!r}:
    open(path, 'w').close()
"""
)

# Run by the worker's interpreter as the worker: its build-job runner, its unit's settings.
_BUILD = r"""
import json, pathlib, shutil, sys
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from comfyburst.schema import EnvironmentBuild, Job, RequestSummary
from comfyburst_worker.env_job import EnvBuildRunner
from comfyburst_worker.settings import WorkerSettings

out = pathlib.Path(sys.argv[1])
out.mkdir(exist_ok=True)

class Blobs:
    def upload_file(self, bucket, name, path, content_type):
        shutil.copyfile(path, out / name.replace("/", "_"))
    def write(self, bucket, name, data, content_type):
        (out / name.replace("/", "_")).write_bytes(data)

config = SimpleNamespace(models_bucket="models", http_model_hosts=[sys.argv[2]])
runner = EnvBuildRunner.of_settings(WorkerSettings(), Blobs(), config)
now = datetime.now(UTC)
job = Job(
    job_id="e" * 32,
    request=RequestSummary(node_count=0, class_types=[], models=[], input_names=[],
                           workflow_bytes=0),
    created_at=now, deadline_at=now + timedelta(hours=1), state_changed_at=now,
    environment_build=EnvironmentBuild(environment_id=sys.argv[3], packs=[sys.argv[4]]),
)
result = runner.run(job)
# The pack's detached process: dead (a zombie of this namespace's init, or gone) after the build.
pid_file = pathlib.Path(sys.argv[5], "pid")
spawned = "never started"
if pid_file.exists():
    try:
        status = pathlib.Path("/proc", pid_file.read_text().strip(), "status").read_text()
        spawned = [r.split()[1] for r in status.splitlines() if r.startswith("State:")][0]
    except FileNotFoundError:
        spawned = "gone"
print(json.dumps({
    "status": result.status.value,
    "error": result.error.message if result.error else None,
    "node_types": result.environment_built.node_types if result.environment_built else None,
    "spawned": spawned,
    "planted": [p for p in sys.argv[6:] if pathlib.Path(p).exists()],
}))
"""


def _venv_stamp(venv: Path) -> str:
    """Every path, size, mode and mtime under ComfyUI's venv (cheaper than its bytes)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(venv):
        dirnames.sort()
        for name in sorted(filenames):
            st = os.lstat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), venv)
            digest.update(f"{rel} {st.st_size} {st.st_mode} {st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _check(failures: list[str], ok: bool, what: str, detail: str = "") -> None:
    print(f"  env build: {what:<42} {'ok' if ok else 'WRONG ' + detail}", flush=True)
    if not ok:
        failures.append(f"{what} {detail}".strip())


def _names(root: Path, table: str) -> dict[int, str]:
    rows = (root / "etc" / table).read_text().splitlines()
    return {int(row.split(":")[2]): row.split(":")[0] for row in rows}


def _worker_env(root: Path) -> list[str]:
    unit = parse_unit_text((root / "etc/systemd/system/comfyburst-worker.service").read_text())
    return [f"{k}={v}" for k, v in environment(unit.get("Environment", [])).items()]


def _build_as_worker(root: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    """`cmd` as the worker (see as_user), in a new PID namespace with its own /proc."""
    argv = [
        "unshare",
        "--pid",
        "--fork",
        "--kill-child",
        f"--mount-proc={root / 'proc'}",
        "chroot",
        str(root),
        "setpriv",
        "--reuid=comfyburst",
        "--regid=comfyburst",
        "--init-groups",
        "--reset-env",
        "--",
        *cmd,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def prove_environment_build(root: Path) -> None:
    """Every check printed; RehearsalFailed naming the failed ones."""
    material = root / MATERIAL
    shutil.rmtree(material, ignore_errors=True)
    make_wheelhouse(material / "wheels")
    failures: list[str] = []
    before = _venv_stamp(root / BASE_VENV)
    try:
        with git_http_server(material / "served") as hostport:
            served, work = material / "served", material / "work"
            pack = serve_pack(served, hostport, work, "rehearsal-pack", init_text=_PACK)
            for folder in (material, *material.rglob("*")):
                folder.chmod(folder.stat().st_mode | 0o444 | (0o111 if folder.is_dir() else 0))
            spawned = root / SPAWNED.lstrip("/")
            spawned.mkdir()
            spawned.chmod(0o777)
            pip_args = f"COMFYBURST_WORKER_ENV_PIP_ARGS=--no-index --find-links /{MATERIAL}/wheels"
            python = "/opt/comfyburst/venv/bin/python"
            argv = [python, "-c", _BUILD, BLOBS, hostport, ENV_ID, pack, SPAWNED, *PLANTED]
            done = _build_as_worker(root, "env", *_worker_env(root), pip_args, *argv)
        last = (done.stdout.strip().splitlines() or ["{}"])[-1]
        result = json.loads(last) if last.startswith("{") else {}
        detail = str(result.get("error") or done.stderr.strip()[-600:])
        _check(failures, result.get("status") == "succeeded", "the build job succeeds", detail)
        _check(failures, result.get("node_types") == [NODE_TYPE], "its node types", str(result))
        stored = root / BLOBS.lstrip("/") / f"environments_{ENV_ID}_layer.tar.gz"
        _check(failures, stored.is_file(), "its archive is stored")
        if stored.is_file():
            with tarfile.open(fileobj=io.BytesIO(stored.read_bytes())) as tar:
                members = tar.getmembers()
            names = {m.name for m in members}
            owners = {m.uname for m in members}
            what = "archive files are the build user's"
            _check(failures, owners == {BUILD_USER}, what, str(owners))
            ok = "custom_nodes/rehearsal-pack/__init__.py" in names and any(
                n.endswith("site-packages/cbenvdep/__init__.py") for n in names
            )
            _check(failures, ok, "archive holds the pack and its requirement")
        # The kill after the build ended what the pack detached; its files went with it.
        state, planted = result.get("spawned"), result.get("planted")
        _check(failures, state in ("Z", "gone"), "the pack's process is dead", str(state))
        what = "the pack's /tmp, /dev/shm files are gone"
        _check(failures, planted == [], what, str(planted))
        builds = root / LAYERS.lstrip("/") / "builds"
        left = sorted(p.name for p in builds.iterdir()) if builds.is_dir() else None
        _check(failures, left == [], "the build folder is deleted", str(left))
        st = builds.stat()
        owner = _names(root, "passwd").get(st.st_uid)
        closed = owner == BUILD_USER and st.st_mode & 0o077 == 0
        mode = f"{owner} {st.st_mode & 0o7777:o}"
        _check(failures, closed, "builds/ is the build user's only", mode)
        archives = sorted(p.name for p in (root / LAYERS.lstrip("/")).glob("*.tar.gz"))
        _check(failures, archives == [], "no archive left in the layers folder", str(archives))
        after = _venv_stamp(root / BASE_VENV)
        _check(failures, after == before, "ComfyUI's venv is unchanged")
    finally:
        shutil.rmtree(material, ignore_errors=True)
        for planted in PLANTED:
            (root / planted.lstrip("/")).unlink(missing_ok=True)
        as_user(root, "comfyburst", "rm", "-rf", BLOBS)
    if failures:
        raise RehearsalFailed(f"environment build: {failures}")
