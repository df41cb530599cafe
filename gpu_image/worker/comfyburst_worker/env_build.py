"""Build an environment's layer once: packs checked out, their requirements installed on top of
the image's ComfyUI venv (never into it), the node types they add read, the layer archived.

The layer folder holds `custom_nodes/<pack>` (a git checkout at its pinned commit, or a registry
pack's archive unpacked: `env_git`, `env_registry`) and
`venv/`, a venv of the base interpreter whose site-packages sees the base venv's packages
through a `.pth` file. pip installs into that venv only what the base does not already satisfy,
with every base package pinned as a constraint: a pack that needs another torch (or another
version of anything the base holds) fails the build instead of replacing it. ComfyUI later runs
with the base interpreter, the layer's site-packages on `PYTHONPATH` and the layer's
`custom_nodes` as an extra custom-nodes path (ComfyUI 0.3.64's extra_model_paths.yaml takes a
`custom_nodes` key: `utils/extra_config.py` adds every key as a folder path, and
`nodes.init_external_custom_nodes` loads from all of `custom_nodes`' paths).

Every command here runs as the caller's user (the worker runs it as ComfyUI's user where the
image has one): that user makes the layer folder, writes everything in it, streams the archive
out (the worker only writes that stream to a file of its own, so it never opens a path the pack
code could swap for a link) and deletes the folder. Nothing here reaches a host other than the
pack's (checked by the caller), the deployment's registry and its archives' hosts (the worker
itself, `env_registry`) and the deployment's package index (pip's own configuration, or
`pip_args` in tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfyburst_worker import env_git
from comfyburst_worker.env_build_errors import BuildFailed, tail, tail_of
from comfyburst_worker.env_git import GitPack
from comfyburst_worker.env_registry import UNZIP, RegistryFetcher, RegistryPack

AnyPack = GitPack | RegistryPack
_SITES = "import site,json;print(json.dumps(site.getsitepackages()))"
_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", "GIT_ASKPASS": "true"}
_XDG = {"CONFIG": ".config", "CACHE": ".cache", "DATA": ".local/share", "STATE": ".local/state"}

# Run as the build's user with the base interpreter: a file written, the layer archived to stdout
# (refused when what a VM takes of it holds a link: env_layers.unpack would refuse each job).
_WRITE = "import pathlib,sys;pathlib.Path(sys.argv[1]).write_text(sys.argv[2])"
_TAR = (
    "import os,sys,tarfile\n"
    "for part in ('custom_nodes', 'venv/lib'):\n"
    "    for top, dirs, files in os.walk(os.path.join(sys.argv[1], part)):\n"
    "        for name in sorted(dirs + files):\n"
    "            path = os.path.join(top, name)\n"
    "            if os.path.islink(path):\n"
    "                sys.exit('a pack holds a link, which no VM unpacks: '\n"
    "                         + os.path.relpath(path, sys.argv[1]))\n"
    "with tarfile.open(fileobj=sys.stdout.buffer, mode='w|gz') as tar:\n"
    "    for part in ('custom_nodes', 'venv'):\n"
    "        tar.add(os.path.join(sys.argv[1], part), arcname=part)\n"
)

# Loads each pack the way ComfyUI does (its folder's `__init__.py` as a module named by the
# folder) and prints, per pack, an `/object_info`-shaped entry of each node type (what
# pre-flight checks jobs against), or the traceback of the first pack that fails.
_PROBE = r"""
import importlib.util, json, os, sys, traceback
root = sys.argv[1]
found = {}

def info(pack, name, cls):
    spec = cls.INPUT_TYPES() or {}
    groups = {k: dict(spec[k]) for k in ("required", "optional") if k in spec}
    out = list(getattr(cls, "RETURN_TYPES", ()) or ())
    return {
        "input": groups,
        "input_order": {k: list(v) for k, v in groups.items()},
        "output": out,
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(out))),
        "output_name": list(getattr(cls, "RETURN_NAMES", out) or out),
        "name": name,
        "display_name": name,
        "description": str(getattr(cls, "DESCRIPTION", "") or ""),
        "python_module": "custom_nodes." + pack,
        "category": str(getattr(cls, "CATEGORY", "") or ""),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }

for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    init = os.path.join(path, "__init__.py")
    if not os.path.isfile(init):
        continue
    try:
        spec = importlib.util.spec_from_file_location(path.replace(".", "_x_"), init)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", {}) or {}
        found[name] = {str(k): info(name, str(k), v) for k, v in sorted(mappings.items())}
    except BaseException:
        print(json.dumps({"failed": name, "error": traceback.format_exc()}))
        sys.exit(3)
print(json.dumps({"packs": found}, default=str))
"""


@dataclass
class BuiltLayer:
    """What a build produced: the node types per pack and the archive's path."""

    node_types: dict[str, list[str]]
    archive: Path
    object_info: dict[str, Any] = field(default_factory=dict)

    @property
    def all_node_types(self) -> list[str]:
        return sorted({t for types in self.node_types.values() for t in types})


Runner = Callable[..., subprocess.CompletedProcess[str]]


@dataclass
class LayerBuilder:
    """Builds a layer with the base interpreter `base_python`; `pip_args` reach pip (an index,
    find-links); `as_user` wraps each command (e.g. `["sudo", "-u", "comfyui", "--"]`)."""

    base_python: Path
    pip_args: tuple[str, ...] = ()
    pip_command: tuple[str, ...] = (sys.executable, "-m", "pip")
    as_user: tuple[str, ...] = ()
    step_timeout_s: float = 900.0
    comfyui_dir: Path | None = None
    run: Runner = field(default=subprocess.run)
    # The deployment's Comfy registry (None: registry packs fail their build).
    registry: RegistryFetcher | None = None
    # The build's own empty home (in its folder): see _fresh_home.
    _home: Path | None = field(default=None, init=False, repr=False)

    def build(self, packs: Sequence[str], layer: Path, archive: Path | None = None) -> BuiltLayer:
        """The layer of `packs` (canonical `URL@COMMIT` or `ID@VERSION` texts) in the new folder
        `layer`, its archive written to `archive` (default: beside `layer`) by this process."""
        nodes_dir, venv = layer / "custom_nodes", layer / "venv"
        archive = archive or layer.parent / f"{layer.name}.tar.gz"
        parsed = [pack_of(p) for p in packs]
        folders = [p.folder for p in parsed]
        if len(set(folders)) != len(folders):
            raise BuildFailed(None, f"two packs share a folder name: {sorted(folders)}")
        # Made by the build's user, so every later step (as that user) may write in it.
        self._cmd(["mkdir", "-p", "--", str(nodes_dir)], None, "making the layer folder")
        self._home = layer / "home"
        self._venv(venv)
        constraints = layer / "base-constraints.txt"
        self._cmd(
            [str(self.base_python), "-c", _WRITE, str(constraints), self._base_pins()],
            None,
            "writing the base constraints",
        )
        for pack in parsed:
            self._fetch(pack, nodes_dir / pack.folder, archive.parent)
            requirements = nodes_dir / pack.folder / "requirements.txt"
            if self._is_file(requirements):
                self._pip(pack, venv, requirements, constraints)
        infos = self._probe(venv, nodes_dir, {p.folder: p.text for p in parsed})
        node_types = {folder: sorted(entries) for folder, entries in infos.items()}
        for pack in parsed:
            if not node_types.get(pack.folder):
                raise BuildFailed(pack.text, "the pack adds no node types (NODE_CLASS_MAPPINGS)")
        self._archive(layer, archive)
        by_text = {p.text: node_types[p.folder] for p in parsed}
        object_info = {k: v for p in parsed for k, v in infos[p.folder].items()}
        return BuiltLayer(by_text, archive, object_info)

    def remove(self, layer: Path) -> None:
        """Deletes a layer folder as the build's user (its files are theirs); raises BuildFailed."""
        # Not checked from here first: the worker may not even see into the build user's folder.
        rm = ["rm", "-rf", "--", str(layer)]
        try:
            self._cmd(rm, None, "deleting the layer folder")
        except BuildFailed:
            # A folder the pack made unreadable stops rm; its owner may open it again.
            self._cmd(["chmod", "-R", "u+rwX", "--", str(layer)], None, "opening the layer folder")
            self._cmd(rm, None, "deleting the layer folder")

    def _archive(self, layer: Path, archive: Path) -> None:
        args = [*self.as_user, str(self.base_python), "-c", _TAR, str(layer)]
        try:
            with archive.open("wb") as out:
                done = self.run(
                    args,
                    stdout=out,
                    stderr=subprocess.PIPE,
                    text=False,
                    timeout=self.step_timeout_s,
                    check=False,
                )
        except subprocess.TimeoutExpired:
            raise BuildFailed(
                None, f"archiving took longer than {self.step_timeout_s:.0f} s"
            ) from None
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace") if isinstance(done.stderr, bytes) else ""
            raise BuildFailed(
                None, f"archiving the layer failed (exit {done.returncode})", tail(err)
            )

    def _cmd(
        self, args: Sequence[str], pack: str | None, what: str, **kw: object
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **_GIT_ENV, **dict(kw.pop("env", {}) or {})}  # type: ignore[call-overload]
        try:
            done = self.run(
                [*self.as_user, *args],
                capture_output=True,
                text=True,
                timeout=self.step_timeout_s,
                env=env,
                check=False,
                **kw,
            )
        except subprocess.TimeoutExpired:
            raise BuildFailed(
                pack, f"{what} took longer than {self.step_timeout_s:.0f} s"
            ) from None
        if done.returncode != 0:
            raise BuildFailed(pack, f"{what} failed (exit {done.returncode})", tail_of(done))
        return done

    def _venv(self, venv: Path) -> None:
        self._cmd([str(self.base_python), "-m", "venv", "--without-pip", str(venv)], None, "venv")
        base_sites = self._py(self.base_python, _SITES)
        # The base venv's packages, visible to pip (satisfied: not installed again) and to the
        # probe; the base itself is never written. Written by the layer's own user.
        link = (
            "import site,sys,pathlib;pathlib.Path(site.getsitepackages()[0],"
            "'_comfyburst_base.pth').write_text(sys.argv[1])"
        )
        lines = "\n".join(json.loads(base_sites)) + "\n"
        self._cmd([str(venv / "bin" / "python"), "-c", link, lines], None, "venv link")

    def _fresh_home(self, args: Sequence[str]) -> list[str]:
        """`args` with HOME (and XDG's folders) in the build's folder: git, pip and the probe
        read configuration, hooks and caches from there. The build user's own home is where
        every earlier job's pack code (a private environment's too) could write, and what a
        build makes is stored once and run by every caller of a shared environment."""
        if self._home is None:
            return list(args)
        home = str(self._home)
        xdg = [f"XDG_{k}_HOME={home}/{v}" for k, v in _XDG.items()]
        return ["env", f"HOME={home}", *xdg, *args]

    def _is_file(self, path: Path) -> bool:
        # Asked as the build's user: the worker may not see into the layer folder at all.
        done = self.run([*self.as_user, "test", "-f", str(path)], capture_output=True, check=False)
        return done.returncode == 0

    def _py(self, python: Path, code: str) -> str:
        return self._cmd([str(python), "-c", code], None, "python").stdout.strip()

    def _base_pins(self) -> str:
        code = (
            "import importlib.metadata as m\n"
            "for d in sorted(m.distributions(), key=lambda d: d.metadata['Name'].lower()):\n"
            "    print(f\"{d.metadata['Name']}=={d.version}\")\n"
        )
        return self._py(self.base_python, code) + "\n"

    def fetch_pack(self, text: str, target: Path, scratch: Path | None = None) -> None:
        """One pack's code into the new folder `target` (a checkout at its commit, or the
        registry's archive unpacked); `scratch`: where the worker keeps a download meanwhile."""
        self._fetch(pack_of(text), target, scratch)

    def _fetch(self, pack: AnyPack, target: Path, scratch: Path | None) -> None:
        if isinstance(pack, GitPack):
            env_git.checkout(self._cmd, self._fresh_home, pack, target)
            return
        if self.registry is None:
            raise BuildFailed(
                pack.text, "this deployment names no Comfy registry (custom_node_registry_url)"
            )
        limits = [str(self.registry.max_archive_bytes), str(self.registry.max_unpacked_bytes)]
        # The worker's own anonymous file: nothing the build's user runs can swap it.
        with tempfile.TemporaryFile(dir=scratch) as download:
            self.registry.download(pack, download)
            self._cmd(
                [str(self.base_python), "-c", UNZIP, str(target), *limits],
                pack.text,
                "unpacking its archive",
                stdin=download,
            )

    def _pip(self, pack: AnyPack, venv: Path, requirements: Path, constraints: Path) -> None:
        args = self._fresh_home(
            [
                *self.pip_command,
                "--python",
                str(venv / "bin" / "python"),
                "install",
                "--no-input",
                "--disable-pip-version-check",
                "--only-binary=:all:",
                "-r",
                str(requirements),
                "-c",
                str(constraints),
                *self.pip_args,
            ]
        )
        try:
            self._cmd(args, pack.text, "installing its requirements")
        except BuildFailed as exc:
            hint = "its requirements conflict with the image's packages (torch & co are fixed)"
            if "ResolutionImpossible" in exc.tail or "conflict" in exc.tail.lower():
                raise BuildFailed(pack.text, hint, exc.tail) from None
            raise

    def _probe(
        self, venv: Path, nodes_dir: Path, texts: dict[str, str]
    ) -> dict[str, dict[str, Any]]:
        cwd = str(self.comfyui_dir) if self.comfyui_dir else None
        env = {"PYTHONPATH": cwd} if cwd else {}
        args = self._fresh_home([str(venv / "bin" / "python"), "-c", _PROBE, str(nodes_dir)])
        done = self.run(
            [*self.as_user, *args],
            capture_output=True,
            text=True,
            timeout=self.step_timeout_s,
            env={**os.environ, **env},
            cwd=cwd,
            check=False,
        )
        last = (done.stdout.strip().splitlines() or ["{}"])[-1]
        try:
            answer = json.loads(last)
        except ValueError:
            answer = {}
        if "failed" in answer:
            pack = texts.get(answer["failed"], answer["failed"])
            raise BuildFailed(pack, "importing the pack raised", tail(answer.get("error", "")))
        if done.returncode != 0 or "packs" not in answer:
            raise BuildFailed(
                None, f"loading the packs failed (exit {done.returncode})", tail_of(done)
            )
        return {str(k): dict(v) for k, v in answer["packs"].items()}


def pack_of(text: str) -> AnyPack:
    """A canonical pack text as the build takes it: a git URL at a commit, or a registry id at
    a version (the API's parse_pack checked which, and the worker again)."""
    source, _, ref = text.rpartition("@")
    if "://" in source:
        return GitPack(source, ref)
    return RegistryPack(source, ref)
