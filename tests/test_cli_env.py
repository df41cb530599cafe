"""`comfyburst env create|list|show` as a user runs them: packs given or read from a local
ComfyUI's git checkouts, the API's refusals, and `--wait` following a build to its end. Against
the app of functions/main.py on the emulators, served on a loopback port; every error is one
message and exit status 2."""

# ruff: noqa: F811  (fixtures imported from the tests they come from)
from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from comfyburst.domain.environments import finish_build
from comfyburst_cli.main import app
from tests._env_pack_support import GIT_ENV
from tests.test_cli_commands import no_settings  # noqa: F401
from tests.test_environments_api import (  # noqa: F401
    KEYS,
    TRUSTED,
    UNKNOWN_ID,
    UNTRUSTED,
    Cloud,
    cloud,
    off_cloud,
    settings,
    standin,
)
from tests.test_registry_packs import _registry_install

WIDE = {"COLUMNS": "250"}


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_ENV},
    )
    return done.stdout.strip()


def _checkout(folder: Path, remote: str | None) -> str:
    """A pack folder as a git checkout with one commit (and `origin`); its commit."""
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("NODE_CLASS_MAPPINGS = {}\n")
    _git(folder, "init", "-q")
    _git(folder, "add", "-A")
    _git(folder, "commit", "-q", "-m", "pack")
    if remote is not None:
        _git(folder, "remote", "add", "origin", remote)
    return _git(folder, "rev-parse", "HEAD")


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), env=WIDE)


# --- input refused before any call (no API configured: a call would fail otherwise) ---------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["env", "create"], "give --pack URL@COMMIT (repeatable) or --from-comfyui DIR"),
        (["env", "create", "--pack", "https://github.com/a/b"], "expected URL@COMMIT"),
        (["env", "create", "--pack", "@" + "1" * 40], "expected URL@COMMIT"),
        (["env", "show", "env-123"], "'env-123' is not an environment id"),
        (["env", "show", "../jobs/x"], "is not an environment id"),
    ],
)
def test_bad_input_is_exit_2_before_any_call(
    no_settings: Path, args: list[str], message: str
) -> None:
    result = _run(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "COMFYBURST_API_URL" not in result.output  # refused before any call


def test_a_folder_without_custom_nodes_is_refused(no_settings: Path) -> None:
    (no_settings / "ComfyUI").mkdir()
    result = _run("env", "create", "--from-comfyui", str(no_settings / "ComfyUI"))
    assert result.exit_code == 2, result.output
    assert "has no custom_nodes/ folder" in result.output
    absent = _run("env", "create", "--from-comfyui", str(no_settings / "absent"))
    assert absent.exit_code == 2 and "is not a folder" in absent.output


def test_packs_that_are_not_git_checkouts_are_named_and_refused(no_settings: Path) -> None:
    nodes = no_settings / "ComfyUI" / "custom_nodes"
    _checkout(nodes / "good-pack", "https://github.com/someone/good-pack.git")
    (nodes / "copied-pack").mkdir()
    _checkout(nodes / "local-only", None)
    (nodes / "old-pack.disabled").mkdir()  # ComfyUI does not load it: not asked about
    result = _run("env", "create", "--from-comfyui", str(nodes.parent))
    assert result.exit_code == 2, result.output
    assert "copied-pack: not a git checkout with a remote (origin)" in result.output
    assert "local-only: not a git checkout with a remote (origin)" in result.output
    assert "good-pack" not in result.output and "old-pack" not in result.output
    assert "--skip NAME" in result.output
    only_bad = _run(
        "env", "create", "--from-comfyui", str(nodes.parent), "--skip", "good-pack",
        "--skip", "copied-pack", "--skip", "local-only",
    )  # fmt: skip
    assert only_bad.exit_code == 2 and "holds no custom-node pack" in only_bad.output


# --- against the API app on the emulators --------------------------------------------------


class Served:
    """The cloud's app on a loopback port; `after_get(env_id)` runs after each GET of an
    environment has been answered (a build ending between two polls of the CLI)."""

    def __init__(self, cloud: Cloud) -> None:
        from werkzeug.serving import make_server

        self.cloud = cloud
        self.after_get: Callable[[str], None] | None = None
        self.gets = 0
        inner = cloud.client.application

        def app(environ: dict[str, Any], start_response: Any) -> Any:
            answer = list(inner(environ, start_response))
            path = str(environ.get("PATH_INFO", ""))
            if environ.get("REQUEST_METHOD") == "GET" and path.startswith("/environments/"):
                self.gets += 1
                if self.after_get is not None:
                    self.after_get(path.rsplit("/", 1)[1])
            return answer

        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.port}"

    def finish(self, env_id: str, **result: Any) -> None:
        """End the environment's build in the store as the completion does."""
        now = datetime.now(UTC)
        self.cloud.deps.environments.update(env_id, lambda env: finish_build(env, now, **result))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _serve(cloud: Cloud, monkeypatch: pytest.MonkeyPatch, who: str = "ana") -> Iterator[Served]:
    served = Served(cloud)
    monkeypatch.setenv("COMFYBURST_API_URL", served.url)
    monkeypatch.setenv("COMFYBURST_AUTH", "api_key")
    monkeypatch.setenv("COMFYBURST_API_KEY", KEYS[who])
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def api(cloud: Cloud, monkeypatch: pytest.MonkeyPatch, no_settings: Path) -> Iterator[Served]:
    yield from _serve(cloud, monkeypatch)


@pytest.fixture
def off_api(
    off_cloud: Cloud, monkeypatch: pytest.MonkeyPatch, no_settings: Path
) -> Iterator[Served]:
    yield from _serve(off_cloud, monkeypatch)


def _created(*args: str) -> dict[str, Any]:
    result = _run("env", "create", *args, "--json")
    assert result.exit_code == 0, result.output
    env: dict[str, Any] = json.loads(result.output)
    return env


@pytest.mark.emulator
def test_create_list_and_show(api: Served) -> None:
    env = _created("--pack", TRUSTED, "--pack", UNTRUSTED)
    assert env["state"] == "building" and env["private"] is True
    assert env["packs"] == sorted([TRUSTED, UNTRUSTED])
    assert _created("--pack", UNTRUSTED, "--pack", TRUSTED)["id"] == env["id"]  # the same set

    listed = _run("env", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert [e["id"] for e in json.loads(listed.output)["environments"]] == [env["id"]]
    table = _run("env", "list")
    assert table.exit_code == 0 and env["id"] in table.output and "building" in table.output

    shown = _run("env", "show", env["id"])
    assert shown.exit_code == 0, shown.output
    assert env["id"] in shown.output and UNTRUSTED in shown.output
    assert json.loads(_run("env", "show", env["id"], "--json").output) == env


@pytest.mark.emulator
def test_from_comfyui_asks_for_each_checkouts_remote_at_its_commit(
    api: Served, no_settings: Path
) -> None:
    nodes = no_settings / "ComfyUI" / "custom_nodes"
    first = _checkout(nodes / "pack-a", "https://github.com/someone/pack-a.git")
    second = _checkout(nodes / "pack-b", "git@github.com:Comfy-Org/pack-b.git")  # SSH form
    (nodes / "pack-b" / "__init__.py").write_text("# changed here\n")
    result = _run("env", "create", "--from-comfyui", str(nodes.parent), "--json")
    assert result.exit_code == 0, result.output
    assert "warning: pack-b has local changes" in result.output
    env = json.loads(result.output.splitlines()[-1])
    assert env["packs"] == [
        f"https://github.com/Comfy-Org/pack-b@{second}",
        f"https://github.com/someone/pack-a@{first}",
    ]


@pytest.mark.emulator
def test_a_pack_the_api_refuses_is_named_by_its_folder(api: Served, no_settings: Path) -> None:
    nodes = no_settings / "ComfyUI" / "custom_nodes"
    _checkout(nodes / "fine", "https://github.com/someone/fine")
    _checkout(nodes / "elsewhere", "https://gitlab.com/someone/elsewhere")
    result = _run("env", "create", "--from-comfyui", str(nodes.parent))
    assert result.exit_code == 2, result.output
    assert "the API answered 403 (pack_not_allowed)" in result.output
    assert "that is elsewhere: https://gitlab.com/someone/elsewhere@" in result.output
    short = _run("env", "create", "--pack", "https://github.com/a/b@1234abc")
    assert short.exit_code == 2, short.output
    assert "the API answered 400 (environment_invalid)" in short.output
    assert "40 hex digits" in short.output
    assert "that is --pack: https://github.com/a/b@1234abc" in short.output
    # A remote that is a path on this machine: the GPU cannot clone it, and the API says so.
    local = no_settings / "Other" / "custom_nodes"
    _checkout(local / "here-only", str(no_settings / "repos" / "here-only"))
    result = _run("env", "create", "--from-comfyui", str(local.parent))
    assert result.exit_code == 2, result.output
    assert "the API answered 400 (environment_invalid)" in result.output
    assert f"that is here-only: {no_settings / 'repos' / 'here-only'}@" in result.output
    assert json.loads(_run("env", "list", "--json").output) == {"environments": []}


@pytest.mark.emulator
def test_an_unknown_environment_is_the_apis_404_and_exit_2(api: Served) -> None:
    result = _run("env", "show", UNKNOWN_ID)
    assert result.exit_code == 2, result.output
    assert "the API answered 404" in result.output


@pytest.mark.emulator
def test_environments_disabled_is_the_apis_403_and_exit_2(off_api: Served) -> None:
    for args in (["create", "--pack", TRUSTED], ["list"], ["show", UNKNOWN_ID]):
        result = _run("env", *args)
        assert result.exit_code == 2, result.output
        assert "the API answered 403 (environments_disabled)" in result.output


@pytest.mark.emulator
def test_wait_follows_the_build_until_it_is_ready(api: Served) -> None:
    api.after_get = lambda env_id: api.finish(
        env_id, node_types=["CbNode"], archive="gs://envs/layer.tar.zst"
    )
    result = _run("env", "create", "--pack", TRUSTED, "--wait", "--json")
    assert result.exit_code == 0, result.output
    env = json.loads(result.output.splitlines()[-1])
    assert env["state"] == "ready" and env["node_types"] == ["CbNode"]
    assert api.gets == 2  # it polled: building once, then ready


@pytest.mark.emulator
def test_wait_on_a_failed_build_shows_why_and_exits_1(api: Served) -> None:
    env = _created("--pack", TRUSTED)
    api.after_get = lambda env_id: api.finish(env_id, error="pack: import raised ValueError")
    result = _run("env", "show", env["id"], "--wait")
    assert result.exit_code == 1, result.output
    assert "failed" in result.output and "import raised ValueError" in result.output


@pytest.mark.emulator
def test_wait_gives_up_at_its_deadline(api: Served) -> None:
    result = _run("env", "create", "--pack", TRUSTED, "--wait", "--timeout-s", "1")
    assert result.exit_code == 2, result.output
    assert "still building after 1 s" in result.output


@pytest.mark.emulator
def test_from_comfyui_asks_for_a_registry_install_as_its_id_at_its_version(
    api: Served, no_settings: Path
) -> None:
    nodes = no_settings / "ComfyUI" / "custom_nodes"
    _registry_install(nodes / "comfyui-kjnodes")  # ComfyUI-Manager's: .tracking, no .git
    commit = _checkout(nodes / "pack-a", "https://github.com/someone/pack-a.git")
    result = _run("env", "create", "--from-comfyui", str(nodes.parent), "--json")
    assert result.exit_code == 0, result.output
    env = json.loads(result.output.splitlines()[-1])
    assert env["packs"] == sorted(
        ["comfyui-kjnodes@1.0.5", f"https://github.com/someone/pack-a@{commit}"]
    )
