"""Test material for environment builds: wheels made on the spot, a base venv, pack repos.

Nothing here reaches a network: wheels are zip files written here, pip runs with
`--no-index --find-links`, and packs are local git repositories.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import os
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from comfyburst.schema import Job

NODE_TYPE = "CbEnvTestDouble"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
}


def make_wheel(folder: Path, name: str, version: str, module_text: str) -> Path:
    """A pure-Python wheel of one module `name` (its text given)."""
    dist = f"{name}-{version}"
    files = {
        f"{name}/__init__.py": module_text.encode(),
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ).encode(),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: cb-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
    return wheel


def make_wheelhouse(folder: Path) -> Path:
    """The pack's dependency, the base's torch and a torch no base may be given."""
    make_wheel(folder, "cbenvdep", "1.0", "FACTOR = 2\n")
    make_wheel(folder, "torch", "2.0.0", "__version__ = '2.0.0'\n")
    make_wheel(folder, "torch", "0.0.1", "__version__ = '0.0.1'\n")
    return folder


def pip_args(wheelhouse: Path) -> tuple[str, ...]:
    return ("--no-index", "--find-links", str(wheelhouse))


def make_base_venv(folder: Path, wheelhouse: Path) -> Path:
    """A venv standing in for the image's ComfyUI venv: it holds torch 2.0.0."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "--python", str(python), "install", "-q"),
            *("--disable-pip-version-check", *pip_args(wheelhouse), "torch==2.0.0"),
        ],
        check=True,
        env={**os.environ, "PIP_CONFIG_FILE": os.devnull},
    )
    return python


def tree_hash(folder: Path) -> str:
    """A hash of every file's path and bytes under `folder` (the base venv, before/after)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in str(p)):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# The default pack's `__init__.py`: NODE_TYPE doubles an INT by its requirement's FACTOR.
DOUBLE_PACK = (
    "from cbenvdep import FACTOR\n\n\n"
    "class Double:\n"
    "    RETURN_TYPES = ('INT',)\n"
    "    FUNCTION = 'run'\n"
    "    CATEGORY = 'test'\n\n"
    "    @classmethod\n"
    "    def INPUT_TYPES(cls):\n"
    "        return {'required': {'value': ('INT', {'default': 1})}}\n\n"
    "    def run(self, value):\n"
    "        return (value * FACTOR,)\n\n\n"
    f"NODE_CLASS_MAPPINGS = {{'{NODE_TYPE}': Double}}\n"
)


def make_pack_repo(
    folder: Path, *, requirements: str = "cbenvdep==1.0\n", init_text: str | None = None
) -> str:
    """A custom-node pack as a git repository with one commit; returns the commit."""
    folder.mkdir(parents=True)
    text = init_text or DOUBLE_PACK
    (folder / "__init__.py").write_text(text)
    (folder / "requirements.txt").write_text(requirements)
    env = {**os.environ, **GIT_ENV}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "pack"]):
        subprocess.run(["git", "-C", str(folder), *args], check=True, env=env)
    head = subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "HEAD"], check=True, env=env, capture_output=True
    )
    return head.stdout.decode().strip()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def git_http_server(root: Path) -> Iterator[str]:
    """A loopback dumb-http git server over `root` (bare repositories); its host:port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve_pack(served: Path, hostport: str, work: Path, name: str, **kw: str) -> str:
    """A pack repository made in `work`, served bare under `served`; its pinned pack text."""
    commit = make_pack_repo(work / name, **kw)
    bare = served / "owner" / name  # the canonical URL has no .git
    env = {**os.environ, **GIT_ENV}
    subprocess.run(
        ["git", "clone", "-q", "--bare", str(work / name), str(bare)], check=True, env=env
    )
    subprocess.run(["git", "-C", str(bare), "update-server-info"], check=True, env=env)
    return f"http://{hostport}/owner/{name}@{commit}"


def double_and_show_pack(node: str, show: str) -> str:
    """A pack's `__init__.py`: `node` doubles an INT by the requirement's FACTOR (so the layer's
    site-packages must load), `show` is an output node showing it."""
    return f"""from cbenvdep import FACTOR


class Double:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"value": ("INT", {{"default": 1}})}}}}

    def run(self, value):
        return (value * FACTOR,)


class Show:
    RETURN_TYPES = ()
    FUNCTION = "show"
    OUTPUT_NODE = True
    CATEGORY = "test"

    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{"value": ("INT", {{"forceInput": True}})}}}}

    def show(self, value):
        return {{"ui": {{"text": [str(value)]}}, "result": ()}}


NODE_CLASS_MAPPINGS = {{"{node}": Double, "{show}": Show}}
"""


def build_job(environment_id: str, packs: list[str], job_id: str = "b" * 32) -> Job:
    """A build job as the API makes it (`environment_build`, no workflow), created now."""
    from comfyburst.schema import EnvironmentBuild, Job, RequestSummary

    now = datetime.now(UTC)
    summary = RequestSummary(
        node_count=0, class_types=[], models=[], input_names=[], workflow_bytes=0
    )
    return Job(
        job_id=job_id,
        request=summary,
        created_at=now,
        deadline_at=now + timedelta(hours=1),
        state_changed_at=now,
        environment_build=EnvironmentBuild(environment_id=environment_id, packs=packs),
    )
