"""A real ComfyUI on the local cloud: the folders it shares with the VMs' workers, how the
cloud starts a checkout's ComfyUI on them, and what it tells the user of a ComfyUI they run.
The last test runs `make demo`'s scenario against a real checkout (COMFYUI_DIR)."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from comfyburst.schema import ModelKind
from comfyburst_worker.settings import WorkerSettings
from localcloud import _procs, real_comfyui
from localcloud.config import REPO_ROOT, RealComfyUI

IMAGE_MODEL_CACHE = REPO_ROOT / "gpu_image" / "scripts" / "06-model-cache.sh"


def test_the_environment_names_a_checkout_a_url_or_nothing(tmp_path: Path) -> None:
    checkout = real_comfyui.from_env(tmp_path, {"COMFYUI_DIR": "/opt/ComfyUI"})
    assert checkout == RealComfyUI(tmp_path, Path("/opt/ComfyUI"), extra_args=("--cpu",))
    on_gpu = real_comfyui.from_env(
        tmp_path, {"COMFYUI_DIR": "/c", "COMFYUI_PYTHON": "/p/python", "COMFYUI_ARGS": ""}
    )
    assert on_gpu is not None and on_gpu.extra_args == () and on_gpu.python == Path("/p/python")
    theirs = real_comfyui.from_env(tmp_path, {"COMFYUI_URL": "http://127.0.0.1:8188/"})
    assert theirs == RealComfyUI(tmp_path, url="http://127.0.0.1:8188")
    assert real_comfyui.from_env(tmp_path, {}) is None


def test_the_job_model_folder_is_the_images_extra_model_path(tmp_path: Path) -> None:
    comfyui = RealComfyUI(tmp_path / "shared", url="http://127.0.0.1:1")
    service, _ = real_comfyui.prepare(comfyui, tmp_path / "state")
    assert service is None  # the user runs this one
    folders = real_comfyui.layout(comfyui)
    parsed = yaml.safe_load(folders["extra_model_paths"].read_text())
    job_models = folders["job_models"]
    assert parsed == {
        "comfyburst": {
            "base_path": str(job_models),
            "is_default": True,
            **{kind.value: f"{kind.value}/" for kind in ModelKind},
        }
    }
    # The image's own file has the same folders (gpu_image/scripts/06-model-cache.sh).
    image_kinds = re.search(r"MODEL_KINDS=\(([^)]*)\)", IMAGE_MODEL_CACHE.read_text())
    assert image_kinds is not None
    assert set(image_kinds.group(1).split()) == set(parsed["comfyburst"]) - {
        "base_path", "is_default"
    }  # fmt: skip
    assert all((job_models / kind.value).is_dir() for kind in ModelKind)
    assert all(folders[name].is_dir() for name in ("input", "output", "temp", "user"))


def test_the_workers_settings_name_the_folders_comfyui_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comfyui = RealComfyUI(tmp_path / "shared", Path(tmp_path / "ComfyUI"))
    env = real_comfyui.guest_env(comfyui, "http://127.0.0.1:9999")
    assert env.pop("COMFYUI_URL") == "http://127.0.0.1:9999"  # vm_guest: no stand-in then
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = WorkerSettings()
    argv = real_comfyui.argv(comfyui, Path("/py"), 9999)
    flags = dict(itertools.pairwise(argv))
    shared = (tmp_path / "shared").resolve()
    assert settings.comfyui_input_dir == Path(flags["--input-directory"]) == shared / "input"
    assert settings.comfyui_output_dir == Path(flags["--output-directory"]) == shared / "output"
    # ComfyUI keeps its temp files in a `temp` folder under --temp-directory.
    assert settings.comfyui_temp_dir == Path(flags["--temp-directory"]) / "temp"
    assert settings.job_models_dir == shared / "job-models"
    assert f"base_path: {settings.job_models_dir}" in real_comfyui.extra_model_paths_yaml(
        settings.job_models_dir
    )
    assert flags["--extra-model-paths-config"] == str(shared / "extra_model_paths.yaml")
    assert settings.comfyui_models_dir == (tmp_path / "ComfyUI" / "models").resolve()
    assert (flags["--listen"], flags["--port"], argv[-1]) == ("127.0.0.1", "9999", "--cpu")
    assert len([k for k in env if k.endswith("_DIR")]) == 5


def test_a_checkouts_comfyui_is_started_with_those_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in checkout whose main.py records how it was started, and exits."""
    checkout = tmp_path / "ComfyUI"
    (checkout / "venv" / "bin").mkdir(parents=True)
    (checkout / "venv" / "bin" / "python").symlink_to(sys.executable)
    (checkout / "main.py").write_text(
        "import json, os, sys\n"
        "json.dump({'argv': sys.argv, 'cwd': os.getcwd(),"
        " 'comfyburst': [k for k in os.environ if k.startswith('COMFYBURST_')]},"
        " open('started.json', 'w'))\n"
    )
    comfyui = RealComfyUI(tmp_path / "shared", checkout)
    monkeypatch.setenv("COMFYBURST_API_URL", "http://127.0.0.1:1")  # the cloud's, not ComfyUI's
    service, env = real_comfyui.prepare(comfyui, tmp_path / "state")
    assert service is not None and service.process is not None
    assert service.process.wait(timeout=60) == 0
    started = json.loads((checkout / "started.json").read_text())
    assert started["cwd"] == str(checkout) and started["comfyburst"] == []
    port = env["COMFYUI_URL"].rsplit(":", 1)[1]
    assert started["argv"][1:] == real_comfyui.argv(comfyui, Path("x"), int(port))[2:]


def test_a_checkout_without_comfyui_is_refused_with_what_to_set(tmp_path: Path) -> None:
    comfyui = RealComfyUI(tmp_path / "shared", tmp_path / "not-comfyui")
    with pytest.raises(_procs.StartupError, match=r"main\.py and a venv/.*COMFYUI_PYTHON"):
        real_comfyui.prepare(comfyui, tmp_path / "state")


@pytest.fixture
def user_comfyui(tmp_path: Path) -> Iterator[tuple[list[str], str]]:
    """A server answering /system_stats with the command line it holds (as ComfyUI's)."""
    argv: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"system": {"argv": ["main.py", *argv]}}).encode()
            self.send_response(200 if self.path == "/system_stats" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield argv, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_comfyui_the_user_runs_is_told_exactly_what_to_restart_it_with(
    tmp_path: Path, user_comfyui: tuple[list[str], str]
) -> None:
    argv, url = user_comfyui
    comfyui = RealComfyUI(tmp_path / "shared", url=url)
    argv += ["--listen", "127.0.0.1", "--port", "8188"]
    advice = real_comfyui.advice_for(comfyui)
    assert advice is not None and "COMFYUI_DIR" in advice
    flags = real_comfyui.folder_flags(comfyui)
    assert all(f"{flag} {value}" in advice for flag, value in flags.items())
    argv += [part for pair in flags.items() for part in pair]
    assert real_comfyui.advice_for(comfyui) is None


@pytest.mark.real_comfyui
@pytest.mark.timeout(900)
def test_make_demo_starts_the_checkouts_comfyui_and_runs_the_job_on_it(tmp_path: Path) -> None:
    if not os.environ.get("COMFYUI_DIR"):
        pytest.skip("COMFYUI_DIR is not set (needs a real ComfyUI checkout)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMFYBURST_")}
    env.pop("COMFYUI_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "localcloud.scenarios.demo", "--out", str(tmp_path / "out")],
        cwd=REPO_ROOT, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "starts the real ComfyUI" in output
    state = Path(re.search(r"state and logs in (\S+)\)", output).group(1))  # type: ignore[union-attr]
    log = (state / "logs" / "comfyui.log").read_text(errors="replace")
    assert "ComfyUI version" in log and "Prompt executed" in log, log[-2000:]
    assert not list((state / "disks").glob("*/comfyui-standin.log")), "a VM ran the stand-in"
    assert list((tmp_path / "out").glob("*.png")), output[-2000:]
    # The real ComfyUI saved the job's output in the shared folder the worker then emptied.
    assert (state / "comfyui" / "output").is_dir()
