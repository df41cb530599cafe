"""No process of the build's user outlives a build (comfyburst_worker/env_reap.py): the worker
ends them through env_build_as before and after each build; a survivor after a build fails its
job and, while it survives, refuses the next build before any pack code runs.

The real kill and clean-up run only as the image's build user, in the bake rehearsal (a
process a pack detaches during the build is gone after it). Here the script runs for real only
where its guard must refuse (this process's own user), with kill, unlink, rmtree and libc
replaced by recorders, so even a broken guard could end or delete nothing.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from comfyburst.schema import DoneStatus, Job
from comfyburst_worker.env_build import BuildFailed, BuiltLayer
from comfyburst_worker.env_job import EnvBuildRunner
from comfyburst_worker.env_reap import REAP_SCRIPT, BuildReaper, ProcessesLeft
from tests._env_pack_support import build_job
from tests._worker_support import local_config, local_settings
from tests.fakes import InMemoryBlobStore

ENV_ID = "env-" + "7" * 64
PACK = f"https://github.com/o/r@{'a' * 40}"
AS_BUILD = ("sudo", "-n", "-u", "comfyburst-build", "--")


def _job() -> Job:
    return build_job(ENV_ID, [PACK], job_id="d" * 32)


class _Answers:
    """A runner answering the reap script with queued JSON lines (and exit codes)."""

    def __init__(self, events: list[str], *answers: tuple[int, dict[str, Any]]) -> None:
        self.events, self.answers, self.argvs = events, list(answers), []  # type: ignore[var-annotated]

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.argvs.append(argv)
        code, answer = self.answers.pop(0)
        self.events.append(f"reap:{code}")
        return subprocess.CompletedProcess(argv, code, json.dumps(answer) + "\n", "")


class _Builder:
    """Stands in for LayerBuilder: records when pack code would run, writes an archive."""

    def __init__(self, events: list[str], fail: bool = False) -> None:
        self.events, self.fail = events, fail

    def build(self, packs: list[str], layer: Path, archive: Path) -> BuiltLayer:
        self.events.append("build")
        if self.fail:
            raise BuildFailed(packs[0], "importing the pack raised")
        archive.write_bytes(b"layer")
        return BuiltLayer({packs[0]: ["CbNode"]}, archive, {"CbNode": {}})

    def remove(self, layer: Path) -> None:
        self.events.append("remove")


def _runner(
    tmp_path: Path, events: list[str], *answers: tuple[int, dict[str, Any]], fail: bool = False
) -> tuple[EnvBuildRunner, InMemoryBlobStore, _Answers]:
    run = _Answers(events, *answers)
    reaper = BuildReaper("comfyburst-build", AS_BUILD, Path("/opt/comfyui/.venv/bin/python"))
    reaper.run = run
    blobs = InMemoryBlobStore()
    builder = _Builder(events, fail)
    runner = EnvBuildRunner(blobs, "models", tmp_path, builder, reaper=reaper)  # type: ignore[arg-type]
    runner._check_pack = lambda text: None  # type: ignore[method-assign]
    return runner, blobs, run


OK = (0, {"left": [], "removed": 0})


def test_the_reap_runs_as_the_build_user_before_and_after_a_build(tmp_path: Path) -> None:
    events: list[str] = []
    runner, blobs, run = _runner(tmp_path, events, OK, OK)
    result = runner.run(_job())
    assert result.status is DoneStatus.SUCCEEDED, result.error
    # Before any pack code, and after it before anything is stored or the folder removed.
    assert events == ["reap:0", "remove", "build", "reap:0", "remove"]
    assert blobs.read("models", f"environments/{ENV_ID}/layer.tar.gz") == b"layer"
    argv = run.argvs[0]
    assert tuple(argv[:5]) == AS_BUILD
    assert argv[5:8] == ["/opt/comfyui/.venv/bin/python", "-I", "-c"]
    assert argv[8] == REAP_SCRIPT and argv[9:] == ["comfyburst-build", str(os.getuid()), "10.0"]


def test_a_survivor_fails_the_build_and_refuses_the_next(tmp_path: Path) -> None:
    events: list[str] = []
    left = (3, {"left": [4242, 4243], "removed": 1})
    runner, blobs, _ = _runner(tmp_path, events, OK, left, left)
    first = runner.run(_job())
    assert first.status is DoneStatus.FAILED and first.error is not None
    assert "survive after the build: 4242, 4243" in first.error.message
    assert blobs.read("models", f"environments/{ENV_ID}/layer.tar.gz") is None  # not stored
    assert events[-1] == "remove"  # the folder is still deleted
    events.clear()
    second = runner.run(_job())
    assert second.status is DoneStatus.FAILED and second.error is not None
    assert "survive before the build: 4242" in second.error.message
    assert "build" not in events  # no pack code ran


def test_after_a_failed_build_the_reap_runs_and_the_builds_error_is_reported(
    tmp_path: Path,
) -> None:
    events: list[str] = []
    left = (3, {"left": [77], "removed": 0})
    runner, _, _ = _runner(tmp_path, events, OK, left, fail=True)
    result = runner.run(_job())
    assert result.error is not None and "importing the pack raised" in result.error.message
    assert events == ["reap:0", "remove", "build", "reap:3", "remove"]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ((2, {"refused": "runs as comfyui"}), "refused before the build: runs as comfyui"),
        ((1, {}), "failed before the build (exit 1)"),
        ((0, {"left": [5]}), "survive before the build: 5"),
    ],
)
def test_a_refused_or_unreadable_reap_refuses_the_build(
    tmp_path: Path, answer: tuple[int, dict[str, Any]], expected: str
) -> None:
    events: list[str] = []
    runner, _, _ = _runner(tmp_path, events, answer)
    result = runner.run(_job())
    assert result.error is not None and expected in result.error.message
    assert "build" not in events


def test_a_reap_that_does_not_answer_is_processes_left() -> None:
    def hangs(argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(argv, kw["timeout"])

    reaper = BuildReaper("comfyburst-build", AS_BUILD, Path("/p"), run=hangs)
    with pytest.raises(ProcessesLeft, match="after the build broke"):
        reaper.reap("after the build")


def test_settings_need_a_build_user_beside_the_prefix(tmp_path: Path) -> None:
    base = {"env_base_python": Path("/opt/comfyui/.venv/bin/python")}
    url, models = "http://127.0.0.1:9", tmp_path / "models"
    prefix_only = local_settings(url, models, env_build_as=" ".join(AS_BUILD), **base)
    runner = EnvBuildRunner.of_settings(prefix_only, InMemoryBlobStore(), local_config())
    assert runner.builder is None and runner.reaper is None
    both = local_settings(
        url, models, env_build_as=" ".join(AS_BUILD), env_build_user="comfyburst-build", **base
    )
    runner = EnvBuildRunner.of_settings(both, InMemoryBlobStore(), local_config())
    assert runner.builder is not None and runner.reaper is not None
    assert runner.reaper.user == "comfyburst-build" and runner.reaper.as_user == AS_BUILD
    assert runner.reaper.python == base["env_base_python"]
    # ComfyUI's folders go to the reaper (a build user owning one is ComfyUI's).
    folders = {runner.reaper.comfyui_folders} == {
        (both.comfyui_input_dir, both.comfyui_output_dir, both.comfyui_temp_dir)
    }
    assert folders
    # The local cloud's one user: nothing to reap (a kill -1 there would end the worker's own).
    local = local_settings(url, models, env_build_unisolated=True, **base)
    runner = EnvBuildRunner.of_settings(local, InMemoryBlobStore(), local_config())
    assert runner.builder is not None and runner.reaper is None


_RECORDERS = """
import ctypes, os, shutil, sys
log = open(sys.argv.pop(1), "a")
def record(name):
    def call(*args, **kw):
        log.write(name + "\\n"); log.flush()
    return call
os.kill, os.unlink, shutil.rmtree = record("kill"), record("unlink"), record("rmtree")
ctypes.CDLL = record("libc")
"""


def _reap_for_real(tmp_path: Path, user: str, worker_uid: int) -> tuple[int, dict[str, Any], str]:
    log = tmp_path / "calls.log"
    code = _RECORDERS + f"exec(compile({REAP_SCRIPT!r}, 'reap', 'exec'))"
    done = subprocess.run(
        [sys.executable, "-I", "-c", code, str(log), user, str(worker_uid), "0.1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = log.read_text() if log.exists() else ""
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1]), calls


def test_the_script_refuses_the_workers_own_user_before_it_signals(tmp_path: Path) -> None:
    me = pwd.getpwuid(os.getuid()).pw_name
    code, answer, calls = _reap_for_real(tmp_path, me, os.getuid())
    assert code == 2 and "not the build user" in answer["refused"]
    assert calls == ""


def test_the_script_refuses_a_user_it_does_not_run_as(tmp_path: Path) -> None:
    code, answer, calls = _reap_for_real(tmp_path, "comfyburst-build", os.getuid() + 4242)
    assert code == 2 and "not the build user comfyburst-build" in answer["refused"]
    assert calls == ""


def test_a_build_user_owning_comfyuis_folders_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """env_build_user naming ComfyUI's user (here: this process's, owner of the folder): the
    kill would end ComfyUI with every build, so the build is refused before the script runs."""
    events: list[str] = []
    runner, blobs, run = _runner(tmp_path, events, OK, OK)
    output = tmp_path / "output"
    output.mkdir()
    assert runner.reaper is not None
    runner.reaper.user = pwd.getpwuid(os.getuid()).pw_name
    runner.reaper.comfyui_folders = (tmp_path / "absent", output)
    result = runner.run(_job())
    assert result.status is DoneStatus.FAILED and result.error is not None
    assert f"owns ComfyUI's folder {output}" in result.error.message
    assert events == [] and run.argvs == []
    assert blobs.read("models", f"environments/{ENV_ID}/layer.tar.gz") is None
    # A user owning none of them goes on to the script.
    runner.reaper.comfyui_folders = (tmp_path / "absent",)
    assert runner.run(_job()).status is DoneStatus.SUCCEEDED
    assert events[0] == "reap:0"
