"""The worker writes a job's inputs into ComfyUI's input folder without following a
link there. That folder is ComfyUI's user's, and between two jobs of the same owner in their
private environment the pack's code keeps running in ComfyUI: it can put a link where the
worker is about to write, which would make the worker (its own rights, its own files, the
environment layers other callers run) write the caller's bytes wherever the link points."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from comfyburst.schema import VmRef
from comfyburst_worker.errors import InputError
from comfyburst_worker.workspace import place_input
from tests._worker_support import local_config, local_settings, make_agent
from tests.fakes import InMemoryBlobStore, InMemoryJobStore

JOB = "a" * 32


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    inputs, outside = tmp_path / "in", tmp_path / "worker-only"
    inputs.mkdir()
    outside.mkdir()
    return inputs, outside


def test_an_input_lands_in_the_jobs_subfolder(folders: tuple[Path, Path]) -> None:
    inputs, _ = folders
    place_input(inputs, f"comfyburst/{JOB}", "a.png", b"one")
    place_input(inputs, f"comfyburst/{JOB}", "b.png", b"two")
    assert (inputs / "comfyburst" / JOB / "a.png").read_bytes() == b"one"
    assert (inputs / "comfyburst" / JOB / "b.png").read_bytes() == b"two"


@pytest.mark.parametrize("planted", ["comfyburst", f"comfyburst/{JOB}", f"comfyburst/{JOB}/x.py"])
def test_a_link_left_in_the_input_folder_is_never_followed(
    folders: tuple[Path, Path], planted: str
) -> None:
    inputs, outside = folders
    link = inputs / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside / "x.py" if planted.endswith(".py") else outside)
    place_input(inputs, f"comfyburst/{JOB}", "x.py", b"import os  # the caller's bytes\n")
    assert list(outside.rglob("*")) == []
    placed = inputs / "comfyburst" / JOB / "x.py"
    assert not placed.is_symlink() and placed.read_bytes() == b"import os  # the caller's bytes\n"


def test_a_folder_swapped_for_a_link_while_the_worker_writes_is_not_followed(
    folders: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pack code still running swaps `comfyburst/` for a link just after the worker made it."""
    inputs, outside = folders
    real_mkdir = os.mkdir

    def mkdir_then_swap(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        real_mkdir(path, mode, dir_fd=dir_fd)
        if path == "comfyburst":
            (inputs / "comfyburst").rmdir()
            (inputs / "comfyburst").symlink_to(outside)

    monkeypatch.setattr(os, "mkdir", mkdir_then_swap)
    with pytest.raises(InputError, match=r"x\.py"):
        place_input(inputs, f"comfyburst/{JOB}", "x.py", b"x = 1\n")
    assert list(outside.rglob("*")) == []


def test_the_job_runner_places_inputs_that_way(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    inputs, outside = folders
    settings = local_settings("http://127.0.0.1:9", tmp_path / "m")
    agent = make_agent(
        settings, local_config(), InMemoryJobStore(), InMemoryBlobStore(), VmRef(name="v", zone="z")
    )
    (inputs / "comfyburst").symlink_to(outside)
    assert agent.runner._place_input("requests.py", b"x = 1\n", f"comfyburst/{JOB}") == (
        f"comfyburst/{JOB}/requests.py"
    )
    assert list(outside.rglob("*")) == []
    assert (inputs / "comfyburst" / JOB / "requests.py").read_bytes() == b"x = 1\n"
