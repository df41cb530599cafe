"""The ComfyUI node as a user gets it: `comfy node pack` builds the registry's package (the core
copied in under a private name at pack time, tools/vendor_core.py), a fresh venv gets its
requirements the way `pip install -r` and ComfyUI-Manager install them, from wheels that
`make node-wheelhouse` resolved from the package index (so every requirement is published; no
wheel of ours is among them), and a loader that does
what ComfyUI does with `custom_nodes/` imports it, with no ComfyBurst checkout on the path.

Needs `make node-install-tools` (comfy-cli in .venv-comfycli, the wheelhouse). The installs
run with `--no-index` against that wheelhouse: the tests reach no network.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests._e2e_support import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

COMFY_CLI = REPO_ROOT / ".venv-comfycli" / "bin" / "comfy"
FUNCTIONS = REPO_ROOT / "functions"
NODE_DIR = REPO_ROOT / "comfy_node"
NODE_NAME = "ComfyBurst"  # the folder name custom_nodes/ gets
CORE_DIR = "_vendor/comfyburst_core"
CORE_MODULES = {"__init__", "schema", "states", "errors", "client", "custom_nodes"}
# Names that exist only from Python 3.11 on (the node and the core run on 3.10).
PY311_ONLY = {("datetime", "UTC"), ("enum", "StrEnum"), ("typing", "Self"), ("tomllib", None)}
# The one form of requirements.txt's lines: a floor and a ceiling (see _allows).
RANGE = r"[\w-]+>=(?P<low>[\d.]+),<(?P<high>[\d.]+)"
# What ComfyUI's own environment has that the node's code may use (requirements-dev's pins).
WHEELHOUSE = REPO_ROOT / ".wheelhouse"
COMFYUI_HAS = re.findall(
    r"^(?:numpy|pillow)==\S+", (REPO_ROOT / "requirements-dev.txt").read_text(), re.M
)


def _env(home: Path, **extra: str) -> dict[str, str]:
    """Nothing of this checkout on the path, no telemetry, none of this machine's pip settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "COMFYBURST_", "VIRTUAL_ENV", "PIP_"))
    }
    env.update(DO_NOT_TRACK="1", COMFY_NO_TELEMETRY="1", **extra)
    env.update(HOME=str(home), PIP_CONFIG_FILE=os.devnull)
    return env


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{argv} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
    return done.stdout


def _tracked(folder: Path) -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "."], cwd=folder, capture_output=True, check=True
    ).stdout.decode()
    return [name for name in out.split("\0") if name]


def _requirements() -> list[str]:
    lines = (NODE_DIR / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@dataclass(frozen=True)
class Built:
    zip_path: Path
    core_wheel: Path
    cloud_wheel: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The node packed by comfy-cli from its git-tracked files plus the core generated at pack
    time, and both halves of the shared package as wheels (from a scratch copy, so the
    checkout gets no build folders)."""
    if not COMFY_CLI.exists() or not (WHEELHOUSE / ".stamp").exists():
        pytest.skip("run `make node-install-tools` first (comfy-cli venv, the wheelhouse)")
    root = tmp_path_factory.mktemp("node-build")
    env = _env(root / "home")
    source = root / NODE_NAME
    for name in _tracked(NODE_DIR):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(NODE_DIR / name, source / name)
    assert not (source / "_vendor").exists(), "the core copy must not be tracked"
    vendor = [sys.executable, "-m", "tools.vendor_core", "--dest", source / "_vendor"]
    _run(vendor, REPO_ROOT, env)
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
    guarded = _guarded_imports(tree)
    for node in ast.walk(tree):
        if node in guarded:  # `try: import x / except ImportError:` has its 3.10 path
            continue
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                assert (node.module, alias.name) not in PY311_ONLY, f"{node.module}.{alias.name}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert (alias.name, None) not in PY311_ONLY, alias.name


def _guarded_imports(tree: ast.AST) -> set[ast.AST]:
    """Imports in the body of a `try` one of whose handlers catches ImportError."""
    guarded: set[ast.AST] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        caught = {
            name.id
            for handler in node.handlers
            for name in ast.walk(handler.type)
            if handler.type is not None
            if isinstance(name, ast.Name)
        }
        if caught & {"ImportError", "ModuleNotFoundError"}:
            guarded.update(
                n
                for stmt in node.body
                for n in ast.walk(stmt)
                if isinstance(n, (ast.Import, ast.ImportFrom))
            )
    return guarded


def test_an_import_guarded_for_python_310_is_allowed_and_a_bare_one_is_not() -> None:
    guarded = ast.parse("try:\n    import tomllib\nexcept ImportError:\n    tomllib = None\n")
    bare = ast.parse("import tomllib\n")
    assert len(_guarded_imports(guarded)) == 1
    assert _guarded_imports(bare) == set()


def _documented_rewrite(line: str) -> str:
    """docs/NODE.md's rewrite, written again here: the shared package's imports made relative."""
    stripped = line.lstrip()
    indent = line[: len(line) - len(stripped)]
    if stripped.startswith("from comfyburst import "):
        return indent + "from . import " + stripped.removeprefix("from comfyburst import ")
    if stripped.startswith("from comfyburst."):
        return indent + "from ." + stripped.removeprefix("from comfyburst.")
    return line


def test_packed_core_is_the_source_after_the_documented_import_rewrite(built: Built) -> None:
    with zipfile.ZipFile(built.zip_path) as archive:
        packed = {n: archive.read(n) for n in archive.namelist() if n.startswith("_vendor/")}
    assert set(packed) == {"_vendor/__init__.py"} | {f"{CORE_DIR}/{m}.py" for m in CORE_MODULES}
    rewritten = 0
    for module in sorted(CORE_MODULES):
        source = (FUNCTIONS / "comfyburst" / f"{module}.py").read_text(encoding="utf-8")
        lines = source.splitlines(keepends=True)
        want = "".join(_documented_rewrite(line) for line in lines)
        assert packed[f"{CORE_DIR}/{module}.py"] == want.encode("utf-8"), module
        rewritten += sum(_documented_rewrite(line) != line for line in lines)
        assert "from comfyburst" not in want and "import comfyburst" not in want, module
    assert rewritten >= 4  # schema (2), states, client: the rewrite did happen


def test_requirements_are_published_packages_only_and_pyproject_says_the_same() -> None:
    required = _requirements()
    names = {re.split(r"[<>=!~ ;\[]", line)[0].lower() for line in required}
    # What ComfyUI 0.3.64's own requirements.txt pins (pydantic~=2.0, pydantic-settings~=2.0;
    # requests comes with it): nothing of ours, nothing unpublished.
    assert names == {"pydantic", "pydantic-settings", "requests"}
    assert all(re.fullmatch(RANGE, line) for line in required), required
    assert all(line.endswith(",<3") for line in required), required  # inside ComfyUI's ~=2.0
    project = tomllib.loads((NODE_DIR / "pyproject.toml").read_text())
    assert project["project"]["dependencies"] == required
    assert project["project"]["requires-python"] == ">=3.10"
    core = tomllib.loads((FUNCTIONS / "core" / "pyproject.toml").read_text())
    assert core["project"]["requires-python"] == ">=3.10"
    assert "build-system" in project and "comfy" in project["tool"]
    assert "_vendor" in project["tool"]["comfy"]["includes"]


def test_pack_has_the_node_at_its_root_with_web_files_and_no_checkout(built: Built) -> None:
    with zipfile.ZipFile(built.zip_path) as archive:
        names = set(archive.namelist())
    assert {"__init__.py", "nodes.py", "_comfy.py", "requirements.txt", "pyproject.toml"} <= names
    assert "web/js/comfyburst.js" in names
    assert f"{CORE_DIR}/schema.py" in names
    assert not any(n.startswith(("comfyburst/", "functions/", "..")) for n in names), names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names), names


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
schema = sys.modules[spec.name + "._vendor.comfyburst_core.schema"]
run = module.NODE_CLASS_MAPPINGS["ComfyBurstRunWorkflow"]()
request = run.build_request('{"1": {"class_type": "EmptyImage", "inputs": {}}}')
nodes = sys.modules[spec.name + ".nodes"]
print(json.dumps({
    "nodes": sorted(module.NODE_CLASS_MAPPINGS),
    "inputs": {k: sorted(v.INPUT_TYPES()) for k, v in module.NODE_CLASS_MAPPINGS.items()},
    "web": module.WEB_DIRECTORY,
    "core_file": schema.__file__,
    "comfyburst_imported": "comfyburst" in sys.modules,
    "google_cloud": importlib.util.find_spec("google") is not None
        and importlib.util.find_spec("google.cloud") is not None,
    "request_valid": schema.JobRequest.model_validate(request).workflow is not None,
    "client": type(nodes.make_client()).__name__,
}))
"""

# A different `comfyburst` in ComfyUI's environment (another project, or an older ComfyBurst):
# the node must not import it.
DECOY = 'raise ImportError("a comfyburst that is not the node\'s was imported")\n'


def _install_requirements(python: Path, folder: Path, how: str, env: dict[str, str]) -> None:
    """The node's requirements as each installer runs pip, from the index's wheels."""
    pip = [python, "-m", "pip", "install", "-q", "--no-index", "--find-links", WHEELHOUSE]
    if how == "pip -r":  # the registry's and docs/NODE.md's hand install
        _run([*pip, "-r", folder / "requirements.txt"], folder, env)
    elif how == "manager":  # ComfyUI-Manager: one `pip install LINE` per line, in the folder
        for line in _requirements():
            _run([*pip, line], folder, env)
    else:  # each requirement at its lowest allowed version: the ranges are honest
        lowest = [re.sub(r">=([^,]+),.*", r"==\1", line) for line in _requirements()]
        assert all("==" in line for line in lowest), lowest
        _run([*pip, *lowest], folder, env)


def _unpack(built: Built, root: Path) -> Path:
    folder = root / "ComfyUI" / "custom_nodes" / NODE_NAME
    with zipfile.ZipFile(built.zip_path) as archive:
        archive.extractall(folder)
    return folder


def _site_packages(python: Path | str, cwd: Path, env: dict[str, str]) -> Path:
    purelib = ["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    return Path(_run([python, *purelib], cwd, env).strip())


@pytest.mark.parametrize("how", ["pip -r", "manager", "lowest"])
def test_packed_node_installs_from_the_index_and_loads(
    built: Built, tmp_path: Path, how: str
) -> None:
    env = _env(tmp_path / "home")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)
    python = venv / "bin" / "python"
    folder = _unpack(built, tmp_path)
    _install_requirements(python, folder, how, env)
    # ComfyUI's own environment has numpy and pillow; the stand-in gets them the same way.
    has = ["--no-index", "--find-links", WHEELHOUSE, *COMFYUI_HAS]
    _run([python, "-m", "pip", "install", "-q", *has], tmp_path, env)
    freeze = _run([python, "-m", "pip", "freeze"], tmp_path, env).lower()
    assert "google" not in freeze and "comfyburst" not in freeze, freeze
    if how == "lowest":
        floors = [line.replace(">=", "==").split(",")[0].lower() for line in _requirements()]
        assert all(f"{floor}." in freeze or f"{floor}\n" in freeze for floor in floors), freeze
    decoy = _site_packages(python, tmp_path, env) / "comfyburst"
    decoy.mkdir()
    (decoy / "__init__.py").write_text(DECOY)
    env["COMFYBURST_API_URL"] = "http://127.0.0.1:9"
    out = _run([python, "-I", "-c", LOADER, folder], tmp_path / "ComfyUI", env)
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded["nodes"] == [
        "ComfyBurstLoraFromURL",
        "ComfyBurstModelFromURL",
        "ComfyBurstRunWorkflow",
        "ComfyBurstTxt2Img",
    ]
    assert all("required" in spec for spec in loaded["inputs"].values())
    assert (folder / loaded["web"].removeprefix("./") / "comfyburst.js").is_file()
    assert loaded["core_file"] == str(folder / CORE_DIR / "schema.py")
    assert not loaded["comfyburst_imported"]
    assert not loaded["google_cloud"]
    assert loaded["request_valid"]
    assert loaded["client"] == "ApiClient"


def _version(python: Path | str, name: str, cwd: Path, env: dict[str, str]) -> str:
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    return _run([python, "-c", code], cwd, env).strip()


def _allows(line: str, version: str) -> bool:
    """Whether `NAME>=LOW,<HIGH` admits `version` (the only form requirements.txt uses)."""

    def parts(text: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", text)[:3])

    match = re.fullmatch(RANGE, line)
    assert match, line
    return parts(match["low"]) <= parts(version) < parts(match["high"])


@pytest.mark.real_comfyui
def test_packed_node_loads_into_a_real_comfyui(built: Built, tmp_path: Path) -> None:
    """The packed node under a real ComfyUI (COMFYUI_DIR, run by COMFYUI_PYTHON): a fresh venv
    that sees ComfyUI's packages gets the node's requirements as ComfyUI-Manager installs them
    (one `pip install LINE` each, from the wheelhouse), then ComfyUI loads the node."""
    comfy_dir = Path(os.environ.get("COMFYUI_DIR", ""))
    comfy_python = os.environ.get("COMFYUI_PYTHON", "")
    if not (comfy_dir / "main.py").is_file() or not comfy_python:
        pytest.skip("set COMFYUI_DIR (a ComfyUI checkout) and COMFYUI_PYTHON (its Python)")
    env = _env(tmp_path / "home")
    venv = tmp_path / "venv"
    _run([comfy_python, "-m", "venv", venv], tmp_path, env)
    python = venv / "bin" / "python"
    # ComfyUI's packages behind the node's own: ComfyUI usually runs from a venv, whose
    # packages `--system-site-packages` would not give (that is the base Python's).
    comfy_site = _site_packages(comfy_python, tmp_path, env)
    (_site_packages(python, tmp_path, env) / "zz-comfyui-packages.pth").write_text(
        f"{comfy_site}\n"
    )
    folder = _unpack(built, tmp_path)
    _install_requirements(python, folder, "manager", env)
    for line in _requirements():  # what ComfyUI has and the node allows stays as it was
        name = re.split(r"[<>=]", line)[0]
        theirs = _version(comfy_python, name, tmp_path, env)
        if _allows(line, theirs):
            assert _version(python, name, tmp_path, env) == theirs, f"{name} was replaced"
    argv = [python, "main.py", "--cpu", "--quick-test-for-ci"]
    argv += ["--base-directory", tmp_path / "ComfyUI", "--disable-all-custom-nodes"]
    argv += ["--whitelist-custom-nodes", NODE_NAME, "--database-url", "sqlite:///:memory:"]
    env["HOME"] = str(tmp_path / "home")
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
