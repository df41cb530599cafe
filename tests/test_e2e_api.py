"""End to end through the API and the CLI on the local cloud (VMs, worker, ComfyUI stand-in)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from comfyburst.client import ApiClient, ClientSettings
from tests._e2e_support import INVERT, REPO_ROOT, e2e_env, invert_workflow

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def localcloud_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """This module's cloud (the autouse wipe in conftest.py wipes it between tests)."""
    return e2e_env(request)


@pytest.fixture
def client(localcloud_env: dict[str, str]) -> ApiClient:
    return ApiClient(ClientSettings(api_url=localcloud_env["COMFYBURST_API_URL"], auth="none"))


def test_sample_workflow_succeeds_with_png_outputs(client: ApiClient) -> None:
    job = client.submit({"workflow": invert_workflow(), "options": {"timeout_s": 240}})
    done = client.wait(job["job_id"], poll_s=0.3, timeout_s=240)
    assert done["state"] == "succeeded", done.get("error")
    # The stand-in numbers files per VM disk (like ComfyUI), so only the prefix is fixed.
    assert len(done["outputs"]) == 1
    assert done["outputs"][0]["name"].startswith("comfyburst_invert_")
    data = client.fetch(done["outputs"][0]["signed_url"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data)).convert("RGB")
    # EmptyImage #336699, inverted.
    assert image.size == (256, 256)
    assert image.getpixel((10, 10)) == (0xCC, 0x99, 0x66)
    assert done["timings"]["total_s"] > 0
    assert done["worker_timings"]["execution_s"] > 0


def test_cli_submit_wait_saves_the_output(localcloud_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, **localcloud_env}
    result = subprocess.run(
        [sys.executable, "-m", "comfyburst_cli.main", "submit", str(INVERT), "--wait",
         "--out", str(out), "--timeout-s", "240"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = out.glob("comfyburst_invert_*.png")
    assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "succeeded" in result.stdout


def test_cli_sends_an_input_image(localcloud_env: dict[str, str], tmp_path: Path) -> None:
    workflow = REPO_ROOT / "examples" / "workflows" / "load_invert.json"
    image = REPO_ROOT / "examples" / "workflows" / "shapes.png"
    out = tmp_path / "out"
    env = {**os.environ, **localcloud_env}
    result = subprocess.run(
        [sys.executable, "-m", "comfyburst_cli.main", "submit", str(workflow), "--input",
         str(image), "--wait", "--out", str(out), "--timeout-s", "240"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (saved,) = out.glob("comfyburst_load_invert_*.png")
    assert Image.open(saved).size == Image.open(image).size
