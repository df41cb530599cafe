"""`comfyburst submit --environment ID`: the job's `options.environment`, refused by the CLI when
malformed and by the API while the environment builds; accepted and recorded once it is ready.
Against the app of functions/main.py on the emulators, served on a loopback port."""

# ruff: noqa: F811  (fixtures imported from the tests they come from)
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests._api_support import body
from tests.test_cli_commands import no_settings  # noqa: F401
from tests.test_cli_env import Served, _created, _run, api  # noqa: F401
from tests.test_environments_api import (  # noqa: F401
    TRUSTED,
    _set_state,
    cloud,
    settings,
    standin,
)


def _workflow(folder: Path) -> Path:
    path = folder / "wf.json"
    path.write_text(json.dumps(body()["workflow"]))
    return path


def test_a_malformed_id_is_exit_2_before_any_call(no_settings: Path) -> None:
    result = _run("submit", str(_workflow(no_settings)), "--environment", "env-123")
    assert result.exit_code == 2, result.output
    assert "not a valid job request" in result.output and "environment" in result.output
    assert "COMFYBURST_API_URL" not in result.output  # refused before any call


@pytest.mark.emulator
def test_submit_runs_in_the_environment_it_names(api: Served, no_settings: Path) -> None:
    env_id = _created("--pack", TRUSTED)["id"]
    workflow = str(_workflow(no_settings))
    building = _run("submit", workflow, "--environment", env_id)
    assert building.exit_code == 2, building.output
    assert "the API answered 409 (environment_building)" in building.output
    _set_state(api.cloud, env_id, "ready")  # as its build job's end marks it
    accepted = _run("submit", workflow, "--environment", env_id)
    assert accepted.exit_code == 0, accepted.output
    (job,) = [j for j in api.cloud.jobs() if j.environment_build is None]
    assert job.options.environment == env_id
    plain = _run("submit", workflow)
    assert plain.exit_code == 0, plain.output
    assert {j.options.environment for j in api.cloud.jobs() if j.environment_build is None} == {
        env_id,
        None,
    }
