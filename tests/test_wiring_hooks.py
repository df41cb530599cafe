"""The deployed package never imports the local cloud: the local cloud injects its hooks (the
chaos run's publish faults) from the outside, through `wiring.wrap_publishers`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from comfyburst import wiring
from comfyburst.settings import FunctionSettings

FUNCTIONS = Path(__file__).resolve().parent.parent / "functions"


def test_no_deployed_module_imports_localcloud() -> None:
    offenders = []
    for path in [FUNCTIONS / "main.py", *sorted((FUNCTIONS / "comfyburst").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "localcloud" or n.startswith("localcloud.") for n in names):
                offenders.append(f"{path.relative_to(FUNCTIONS)}:{node.lineno}")
    assert offenders == []


class _Client:
    def topic_path(self, project: str, topic: str) -> str:
        return f"projects/{project}/topics/{topic}"


class _Tagged:
    def __init__(self, inner: object) -> None:
        self.inner = inner

    def publish(self, data: bytes, attributes: dict[str, str]) -> str:
        raise AssertionError("not called here")


def test_wrappers_injected_from_outside_wrap_every_publisher(monkeypatch) -> None:
    monkeypatch.setattr(wiring, "_PUBLISHER_WRAPPERS", [])
    settings = FunctionSettings(
        project_id="p", jobs_bucket="j", outputs_bucket="o", signals_bucket="s", results_topic="t"
    )
    assert not isinstance(wiring.publisher(settings, _Client()), _Tagged)
    wiring.wrap_publishers(_Tagged)
    wrapped = wiring.publisher(settings, _Client())
    assert isinstance(wrapped, _Tagged)
    assert wrapped.inner._topic_path == "projects/p/topics/t"  # the real publisher inside


def test_the_local_cloud_source_injects_its_publish_faults(tmp_path) -> None:
    code = (
        "import localcloud.functions_source as src\n"
        "from comfyburst import wiring\n"
        "from localcloud.publish_faults import FaultyPublisher\n"
        "wrapped = wiring._PUBLISHER_WRAPPERS[0](object())\n"
        "print(type(wrapped).__name__, callable(src.api), callable(src.reaper))\n"
    )
    env = {"COMFYBURST_LOCAL_PUBLISH_FAULTS": str(tmp_path / "faults"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["FaultyPublisher", "True", "True"]
