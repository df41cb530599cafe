"""`comfyburst submit --gpu-class` and `comfyburst gpu-classes`: the option reaches the request,
a malformed name is a message and exit 2 before any call, an unknown one is the API's 400."""

# ruff: noqa: F811  (fixtures imported from the tests they come from)
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from comfyburst_cli.main import app
from comfyburst_cli.requests_builder import CliInputError, load_request
from tests.test_cli_commands import _write_local_env, no_settings, workflow_file  # noqa: F401


def test_the_class_goes_into_the_options(workflow_file: Path) -> None:
    request = load_request(workflow_file, [], [], 60, "l4-spot")
    assert request["options"] == {"timeout_s": 60, "gpu_class": "l4-spot"}
    assert "options" not in load_request(workflow_file, [], [], None)


def test_a_malformed_class_name_is_refused_before_any_call(workflow_file: Path) -> None:
    with pytest.raises(CliInputError, match="gpu_class"):
        load_request(workflow_file, [], [], None, "L4 Spot")


def test_a_malformed_class_is_exit_2(workflow_file: Path, no_settings: Path) -> None:
    result = CliRunner().invoke(app, ["submit", str(workflow_file), "--gpu-class", "A100!"])
    assert result.exit_code == 2, result.output
    assert "gpu_class" in result.output


@pytest.mark.emulator
def test_gpu_classes_lists_the_local_clouds_class(
    localcloud_env: dict[str, str], no_settings: Path
) -> None:
    _write_local_env(no_settings, localcloud_env)
    result = CliRunner().invoke(app, ["gpu-classes", "--json"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["default"] == "default"
    assert [c["name"] for c in answer["gpu_classes"]] == ["default"]
    table = CliRunner().invoke(app, ["gpu-classes"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "default" in table.output


@pytest.mark.emulator
def test_an_unknown_class_is_the_apis_refusal_and_exit_2(
    localcloud_env: dict[str, str], no_settings: Path, workflow_file: Path
) -> None:
    _write_local_env(no_settings, localcloud_env)
    result = CliRunner().invoke(
        app, ["submit", str(workflow_file), "--gpu-class", "a100"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 2, result.output
    assert "the API answered 400" in result.output
    assert "unknown GPU class" in result.output
