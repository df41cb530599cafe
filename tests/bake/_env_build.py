"""Phase 2 of the bake rehearsal: one environment build in the booted root, as the image's
users. The worker (`comfyburst`, its unit's settings) runs a build job of a pack served by a
loopback git server, with a local wheel for the pack's requirement: the pack's code runs as
`comfyui` in `builds/`, pip is the tools venv's, the archive's files are `comfyui`'s, the build
folder is gone afterwards and ComfyUI's venv is unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

from tests._env_pack_support import NODE_TYPE, git_http_server, make_wheelhouse, serve_pack
from tests.bake._as_user import as_user
from tests.bake._root import RehearsalFailed
from tests.bake.systemctl_standin import environment, parse_unit_text

ENV_ID = "env-" + "5a" * 32
MATERIAL = "tmp/comfyburst-env-rehearsal"  # in the root, readable by everyone
BLOBS = "/var/lib/comfyburst/rehearsal-blobs"  # the worker's: a stand-in for the bucket
LAYERS = "/var/lib/comfyburst-environments"
BASE_VENV = "opt/comfyui/.venv"

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
print(json.dumps({
    "status": result.status.value,
    "error": result.error.message if result.error else None,
    "node_types": result.environment_built.node_types if result.environment_built else None,
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


def prove_environment_build(root: Path) -> None:
    """Every check printed; RehearsalFailed naming the failed ones."""
    material = root / MATERIAL
    shutil.rmtree(material, ignore_errors=True)
    make_wheelhouse(material / "wheels")
    failures: list[str] = []
    before = _venv_stamp(root / BASE_VENV)
    try:
        with git_http_server(material / "served") as hostport:
            pack = serve_pack(material / "served", hostport, material / "work", "rehearsal-pack")
            for folder in (material, *material.rglob("*")):
                folder.chmod(folder.stat().st_mode | 0o444 | (0o111 if folder.is_dir() else 0))
            pip_args = f"COMFYBURST_WORKER_ENV_PIP_ARGS=--no-index --find-links /{MATERIAL}/wheels"
            python = "/opt/comfyburst/venv/bin/python"
            argv = [python, "-c", _BUILD, BLOBS, hostport, ENV_ID, pack]
            done = as_user(root, "comfyburst", "env", *_worker_env(root), pip_args, *argv)
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
            _check(failures, owners == {"comfyui"}, "archive files are comfyui's", str(owners))
            ok = "custom_nodes/rehearsal-pack/__init__.py" in names and any(
                n.endswith("site-packages/cbenvdep/__init__.py") for n in names
            )
            _check(failures, ok, "archive holds the pack and its requirement")
        builds = root / LAYERS.lstrip("/") / "builds"
        left = sorted(p.name for p in builds.iterdir()) if builds.is_dir() else None
        _check(failures, left == [], "the build folder is deleted", str(left))
        st = builds.stat()
        owner = _names(root, "passwd").get(st.st_uid)
        closed = owner == "comfyui" and st.st_mode & 0o077 == 0
        _check(failures, closed, "builds/ is comfyui's only", f"{owner} {st.st_mode & 0o7777:o}")
        archives = sorted(p.name for p in (root / LAYERS.lstrip("/")).glob("*.tar.gz"))
        _check(failures, archives == [], "no archive left in the layers folder", str(archives))
        after = _venv_stamp(root / BASE_VENV)
        _check(failures, after == before, "ComfyUI's venv is unchanged")
    finally:
        shutil.rmtree(material, ignore_errors=True)
        as_user(root, "comfyburst", "rm", "-rf", BLOBS)
    if failures:
        raise RehearsalFailed(f"environment build: {failures}")
