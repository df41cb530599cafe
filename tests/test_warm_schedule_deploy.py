"""A warm schedule in terraform's gpu_classes: a good one reaches COMFYBURST_GPU_CLASSES and
loads as the functions read it; a wrong one fails the plan naming the rule (a real Terraform,
offline, as tests/test_deploy_gpu_classes.py runs it)."""

from __future__ import annotations

import pytest

from tests.test_deploy_gpu_classes import (
    GOOD,
    _evaluate,
    _run,
    _settings,
    _two_classes,
    needs_terraform,
)

WINDOW = {"days": "mon-fri", "from": "08:00", "to": "19:00", "time_zone": "Europe/Berlin", "vms": 2}


@needs_terraform
def test_a_warm_schedule_reaches_the_functions(tmp_path, monkeypatch):
    classes = _two_classes(std={"warm": [WINDOW, {**WINDOW, "days": "sat", "time_zone": None}]})
    classes["std"]["warm"][1].pop("time_zone")
    values = _evaluate(tmp_path, {"project_id": "p", **GOOD, "gpu_classes": classes})
    specs = {s["name"]: s for s in values["specs"]}
    assert specs["spot"]["warm"] == []
    assert specs["std"]["warm"][1]["time_zone"] == "UTC"
    loaded = _settings(monkeypatch, values, None).gpu_class_set().get("std")
    assert loaded is not None and [w.vms for w in loaded.warm] == [2, 2]
    assert loaded.warm[0].from_ == "08:00" and loaded.warm[0].time_zone == "Europe/Berlin"


@needs_terraform
@pytest.mark.parametrize(
    "window",
    [
        {**WINDOW, "days": "Mon-Fri"},
        {**WINDOW, "from": "8:00"},
        {**WINDOW, "to": "24:30"},
        {**WINDOW, "to": "08:00"},
        {**WINDOW, "vms": 0},
        {**WINDOW, "vms": 9},
        {**WINDOW, "time_zone": "Europe Berlin"},
    ],
    ids=["days", "from", "to", "empty", "zero", "beyond-max-vms", "time-zone"],
)
def test_a_wrong_window_fails_the_plan(tmp_path, window):
    classes = _two_classes(std={"warm": [window]})
    result = _run(tmp_path, {"project_id": "p", **GOOD, "gpu_classes": classes})
    assert result.returncode != 0
    said = " ".join((result.stdout + result.stderr).split())
    assert "Every gpu_classes warm window needs" in said, said
