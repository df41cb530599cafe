"""`comfyburst submit --wait --out` through the whole local cloud: a VM starts, the worker runs
the workflow on the ComfyUI stand-in, and the CLI saves what came back."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from comfyburst_cli.main import app
from tests._e2e_support import INVERT, e2e_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture
def localcloud_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The shared e2e cloud (conftest's autouse wipe empties it, and starts no other)."""
    return e2e_env(request)


def test_submit_wait_saves_the_outputs(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = e2e_env(request)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "results"
    result = CliRunner().invoke(
        app, ["submit", str(INVERT), "--wait", "--out", str(out)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "succeeded" in result.output
    (saved,) = sorted(out.rglob("*.png"))
    with Image.open(saved) as image:
        assert image.convert("RGB").getpixel((0, 0)) == (0xCC, 0x99, 0x66)  # #336699 inverted
