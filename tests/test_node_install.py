"""The ComfyUI node as a user gets it: `comfy node pack` builds the registry's package, a fresh
venv gets only its requirements (from local wheels, --no-index), and a loader that does what
ComfyUI does with `custom_nodes/` imports it, with no ComfyBurst checkout on the path.

Needs `make node-install-tools` (comfy-cli in .venv-comfycli, wheels in .wheelhouse).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._e2e_support import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

COMFY_CLI = REPO_ROOT / ".venv-comfycli" / "bin" / "comfy"
WHEELHOUSE = REPO_ROOT / ".wheelhouse"
FUNCTIONS = REPO_ROOT / "functions"
NODE_DIR = REPO_ROOT / "comfy_node"
NODE_NAME = "ComfyBurst"  # the folder name custom_nodes/ gets
CORE_MODULES = {"__init__", "schema", "states", "errors", "client", "custom_nodes"}
# Names that exist only from Python 3.11 on (the node and the core run on 3.10).
PY311_ONLY = {("datetime", "UTC"), ("enum", "StrEnum"), ("typing", "Self"), ("tomllib", None)}


def _hermetic_env(**extra: str) -> dict[str, str]:
    """No pip configuration, no index, no telemetry, nothing of this checkout on the path."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "PYTHON", "COMFYBURST_", "VIRTUAL_ENV"))
    }
    env.update(PIP_CONFIG_FILE=os.devnull, DO_NOT_TRACK="1", COMFY_NO_TELEMETRY="1", **extra)
    return env


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    return done.stdout


def _tracked(folder: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "."], cwd=folder, capture_output=True, check=True
    ).stdout.decode()
    return [name for name in out.split("\0") if name]


@dataclass(frozen=True)
class Built:
    zip_path: Path
    wheels: Path
    core_wheel: Path
    cloud_wheel: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The node packed by comfy-cli from its git-tracked files, and both halves of the shared
    package built as wheels (from a scratch copy, so the checkout gets no build folders)."""
    if not COMFY_CLI.exists() or not (WHEELHOUSE / ".stamp").exists():
        pytest.skip("run `make node-install-tools` first (comfy-cli venv and local wheels)")
    root = tmp_path_factory.mktemp("node-build")
    env = _hermetic_env(HOME=str(root / "home"))
    source = root / NODE_NAME
    for name in _tracked(NODE_DIR):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(NODE_DIR / name, source / name)
    _run(["git", "init", "-q"], source, env)
    _run(["git", "add", "-A"], source, env)
    _run([COMFY_CLI, "--skip-prompt", "--no-enable-telemetry", "node", "pack"], source, env)

    functions = root / "functions"
    shutil.copytree(
        FUNCTIONS,
        functions,
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "main.py"),
    )
    wheels = root / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    _run([*pip_wheel, "-w", wheels / "core", functions / "core"], root, env)
    _run([*pip_wheel, "-w", wheels / "cloud", functions], root, env)
    return Built(
        source / "node.zip",
        wheels / "core",
        next((wheels / "core").glob("comfyburst_core-*.whl")),
        next((wheels / "cloud").glob("comfyburst-*.whl")),
    )


def _py_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return {n for n in archive.namelist() if n.endswith(".py")}


def test_core_and_cloud_wheels_split_the_one_source_without_overlap(built: Built) -> None:
    core, cloud = _py_files(built.core_wheel), _py_files(built.cloud_wheel)
    assert core == {f"comfyburst/{m}.py" for m in CORE_MODULES}
    assert not core & cloud
    source = {
        str(p.relative_to(FUNCTIONS))
        for p in (FUNCTIONS / "comfyburst").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert core | cloud == source
    with zipfile.ZipFile(built.cloud_wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA")))
    assert b"Requires-Dist: comfyburst-core==0.1.0" in metadata


def test_core_imports_nothing_of_the_cloud_side_and_parses_as_python_310() -> None:
    for module in sorted(CORE_MODULES):
        path = FUNCTIONS / "comfyburst" / f"{module}.py"
        tree = ast.parse(path.read_text(), feature_version=(3, 10))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("comfyburst"):
                target = (node.module or "").removeprefix("comfyburst").lstrip(".")
                names = [target] if target else [a.name for a in node.names]
                for name in names:
                    assert name.split(".")[0] in CORE_MODULES | {"SCHEMA_VERSION"}, (
                        f"{path.name} imports comfyburst.{name}, which is not in the core"
                    )


@pytest.mark.parametrize(
    "path",
    [
        *sorted(NODE_DIR.glob("*.py")),
        *(FUNCTIONS / "comfyburst" / f"{m}.py" for m in sorted(CORE_MODULES)),
    ],
    ids=lambda p: p.name,
)
def test_node_and_core_need_nothing_newer_than_python_310(path: Path) -> None:
    tree = ast.parse(path.read_text(), feature_version=(3, 10))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                assert (node.module, alias.name) not in PY311_ONLY, f"{node.module}.{alias.name}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert (alias.name, None) not in PY311_ONLY, alias.name


def test_requirements_and_pyproject_name_the_same_dependencies() -> None:
    lines = (NODE_DIR / "requirements.txt").read_text().splitlines()
    required = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    project = tomllib.loads((NODE_DIR / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == required
    assert project["project"]["requires-python"] == ">=3.10"
    core = tomllib.loads((FUNCTIONS / "core" / "pyproject.toml").read_text())
    assert core["project"]["requires-python"] == ">=3.10"
    assert "build-system" in project and "comfy" in project["tool"]


def test_pack_has_the_node_at_its_root_with_web_files_and_no_checkout(built: Built) -> None:
    with zipfile.ZipFile(built.zip_path) as archive:
        names = set(archive.namelist())
    assert {"__init__.py", "nodes.py", "_comfy.py", "requirements.txt", "pyproject.toml"} <= names
    assert "web/js/comfyburst.js" in names
    assert not any(n.startswith(("comfyburst/", "functions/", "..")) for n in names), names


# What ComfyUI's nodes.load_custom_node does with a package folder, then what the tests check.
LOADER = r"""
import importlib.util, json, os, sys
folder = sys.argv[1]
spec = importlib.util.spec_from_file_location(
    os.path.basename(folder), os.path.join(folder, "__init__.py"),
    submodule_search_locations=[folder])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
import comfyburst
from comfyburst.schema import JobRequest
run = module.NODE_CLASS_MAPPINGS["ComfyBurstRunWorkflow"]()
request = run.build_request('{"1": {"class_type": "EmptyImage", "inputs": {}}}')
nodes = sys.modules[spec.name + ".nodes"]
print(json.dumps({
    "nodes": sorted(module.NODE_CLASS_MAPPINGS),
    "inputs": {k: sorted(v.INPUT_TYPES()) for k, v in module.NODE_CLASS_MAPPINGS.items()},
    "web": module.WEB_DIRECTORY,
    "comfyburst_file": comfyburst.__file__,
    "google_cloud": importlib.util.find_spec("google") is not None
        and importlib.util.find_spec("google.cloud") is not None,
    "cloud_side": importlib.util.find_spec("comfyburst.adapters") is not None,
    "request_valid": JobRequest.model_validate(request).workflow is not None,
    "client": type(nodes.make_client()).__name__,
}))
"""


def _fresh_install(built: Built, root: Path, python: str, *venv_args: str) -> tuple[Path, Path]:
    """A venv with only the node's requirements; the package unzipped into custom_nodes/."""
    env = _hermetic_env(HOME=str(root / "home"))
    venv = root / "venv"
    _run([python, "-m", "venv", *venv_args, venv], root, env)
    folder = root / "ComfyUI" / "custom_nodes" / NODE_NAME
    with zipfile.ZipFile(built.zip_path) as archive:
        archive.extractall(folder)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index"]
    links = ["--find-links", WHEELHOUSE, "--find-links", built.wheels]
    _run([*pip, *links, "-r", folder / "requirements.txt"], root, env)
    return venv, folder


def test_packed_node_installs_with_only_its_requirements_and_loads(
    built: Built, tmp_path: Path
) -> None:
    venv, folder = _fresh_install(built, tmp_path, sys.executable)
    # ComfyUI's own environment has numpy and pillow; the stand-in gets them the same way.
    env = _hermetic_env(HOME=str(tmp_path / "home"))
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index"]
    _run([*pip, "--find-links", WHEELHOUSE, "numpy", "pillow"], tmp_path, env)
    freeze = _run([venv / "bin" / "python", "-m", "pip", "freeze"], tmp_path, env).lower()
    assert "google" not in freeze, freeze
    env["COMFYBURST_API_URL"] = "http://127.0.0.1:9"
    out = _run([venv / "bin" / "python", "-I", "-c", LOADER, folder], tmp_path / "ComfyUI", env)
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded["nodes"] == [
        "ComfyBurstLoraFromURL",
        "ComfyBurstModelFromURL",
        "ComfyBurstRunWorkflow",
        "ComfyBurstTxt2Img",
    ]
    assert all("required" in spec for spec in loaded["inputs"].values())
    assert (folder / loaded["web"].removeprefix("./") / "comfyburst.js").is_file()
    assert loaded["comfyburst_file"].startswith(str(venv)), loaded["comfyburst_file"]
    assert not loaded["google_cloud"]
    assert not loaded["cloud_side"]
    assert loaded["request_valid"]
    assert loaded["client"] == "ApiClient"


@pytest.mark.real_comfyui
def test_packed_node_loads_into_a_real_comfyui(built: Built, tmp_path: Path) -> None:
    """The packed node under a real ComfyUI (COMFYUI_DIR, run by COMFYUI_PYTHON): the venv sees
    ComfyUI's packages and gets only the node's requirements on top."""
    comfy_dir = Path(os.environ.get("COMFYUI_DIR", ""))
    python = os.environ.get("COMFYUI_PYTHON", "")
    if not (comfy_dir / "main.py").is_file() or not python:
        pytest.skip("set COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (its Python)")
    venv, folder = _fresh_install(built, tmp_path, python)
    env = _hermetic_env(HOME=str(tmp_path / "home"))
    # ComfyUI's packages behind the node's own: ComfyUI usually runs from a venv, whose
    # packages `--system-site-packages` would not give (that is the base Python's).
    purelib = ["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    comfy_site = _run([python, *purelib], tmp_path, env).strip()
    venv_site = Path(_run([venv / "bin" / "python", *purelib], tmp_path, env).strip())
    (venv_site / "zz-comfyui-packages.pth").write_text(f"{comfy_site}\n")
    argv = [venv / "bin" / "python", "main.py", "--cpu", "--quick-test-for-ci"]
    argv += ["--base-directory", tmp_path / "ComfyUI", "--disable-all-custom-nodes"]
    argv += ["--whitelist-custom-nodes", NODE_NAME, "--database-url", "sqlite:///:memory:"]
    done = subprocess.run(
        [str(a) for a in argv], cwd=comfy_dir, env=env, capture_output=True, text=True, timeout=300
    )
    log = done.stdout + done.stderr
    ours = [line for line in log.splitlines() if line.rstrip().endswith(NODE_NAME)]
    assert ours and not any("IMPORT FAILED" in line for line in ours), log[-4000:]
    # ComfyUI's own tracebacks (an optional module it lacks) are not ours to judge.
    blocks = [b.split("\n\n")[0].split("Import times")[0] for b in log.split("Traceback")[1:]]
    our_tracebacks = [block for block in blocks if str(folder) in block]
    assert not our_tracebacks, our_tracebacks[0][-4000:]
