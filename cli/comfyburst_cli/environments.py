"""`comfyburst env`: environments of custom-node packs, built once on the GPU side.

`env create` asks for the environment of pinned packs, given as `--pack URL@COMMIT` or read from
a local ComfyUI's `custom_nodes/` with the rule the node uses for a missing node type's pack
(`comfyburst.custom_nodes.read_pack`: the folder's git remote `origin` and its HEAD commit; a
registry install without git, its `ID@VERSION`).
Whether a pack may be built, and its canonical form, is the API's decision; this checks only
what it must to send a request.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from comfyburst.client import ApiError
from comfyburst.custom_nodes import PackError, local_packs, pack_source
from comfyburst_cli._api import api_client as _client
from comfyburst_cli._errors import CliError, cli_errors, describe_api_error, errors
from comfyburst_cli.image_nodes import _is_own_node

if TYPE_CHECKING:
    from comfyburst.client import ApiClient

env_app = typer.Typer(
    help="Environments: custom-node packs built once on a GPU VM, cached, named by jobs."
)
console = Console()
ENVIRONMENT_ID = re.compile(r"^env-[0-9a-f]{64}$")
PACK_HELP = escape(
    "A pinned pack: https://HOST/OWNER/REPO@COMMIT (40 hex) or REGISTRY_ID@VERSION (repeatable)"
)
# A build job times out after an hour (services/environments.BUILD_TIMEOUT_S), and the API then
# fails its environment: a margin over that.
DEFAULT_WAIT_S = 4200.0

# The options `env create` and `env show` share (and `env list` its --json).
_Wait = Annotated[bool, typer.Option(help="Wait until it is built (ready or failed)")]
_TimeoutS = Annotated[
    float, typer.Option(help="With --wait: give up after this many seconds", min=1)
]
_AsJson = Annotated[bool, typer.Option("--json", help="The API's answer as JSON")]


def packs_of_comfyui(comfyui: Path, skip: list[str]) -> list[tuple[str, str]]:
    """(folder name, pack text) for each enabled pack of a local ComfyUI; every folder that is
    not a git checkout with a remote and a commit is named, and the whole request refused."""
    if not comfyui.is_dir():
        raise CliError(f"{comfyui} is not a folder (expected a ComfyUI install)")
    custom_nodes = comfyui / "custom_nodes"
    if not custom_nodes.is_dir():
        raise CliError(f"{comfyui} has no custom_nodes/ folder: is it a ComfyUI install?")
    found: list[tuple[str, str]] = []
    problems: list[str] = []
    for pack in local_packs(custom_nodes):
        if pack.name in skip or _is_own_node(pack):
            continue
        try:
            found.append((pack.name, pack_source(pack, allow_dirty=True)))
        except PackError as exc:
            problems.append(str(exc))
            continue
        if pack.dirty:
            errors.print(f"warning: {pack.name} has local changes the commit does not hold")
    if problems:
        raise CliError(
            "these packs cannot be built from their git source (commit and push them, or "
            "leave them out with --skip NAME):\n  " + "\n  ".join(problems)
        )
    if not found:
        raise CliError(f"{custom_nodes} holds no custom-node pack to build")
    return found


def _check_pack(text: str) -> str:
    source, at, ref = text.strip().rpartition("@")
    if not at or not source or not ref:
        raise CliError(f"--pack {text!r}: expected URL@COMMIT or REGISTRY_ID@VERSION")
    return text.strip()


def _check_id(environment_id: str) -> str:
    if not ENVIRONMENT_ID.match(environment_id):
        raise CliError(f"{environment_id!r} is not an environment id (env- and 64 hex digits)")
    return environment_id


def _show(env: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None)
    for key in ("id", "state", "private", "comfyui_commit", "created_at"):
        if env.get(key) is not None:
            table.add_row(key, escape(str(env[key])))
    for pack in env.get("packs") or []:
        table.add_row("pack", escape(str(pack)))
    if env.get("node_types"):
        table.add_row("node_types", escape(", ".join(env["node_types"])))
    if env.get("error"):
        table.add_row("error", escape(str(env["error"])))
    console.print(table)


def _create(client: ApiClient, packs: list[tuple[str, str]]) -> dict[str, Any]:
    try:
        return client.create_environment([text for _, text in packs])
    except ApiError as exc:
        # The API names the refused pack by its index (`packs.N`): say which one that is.
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        field = str(error.get("field") or "") if isinstance(error, dict) else ""
        index = field.removeprefix("packs.")
        if not index.isdigit() or int(index) >= len(packs):
            raise
        name, text = packs[int(index)]
        raise CliError(f"{describe_api_error(exc)}\n  that is {name}: {text}") from exc


def _answer(
    client: ApiClient, env: dict[str, Any], wait: bool, timeout_s: float, as_json: bool
) -> None:
    """`env create`'s and `env show`'s end: wait for the build if asked, print the environment,
    exit 1 when a wait ended short of ready."""
    if wait and env.get("state") == "building":
        with cli_errors():
            env = _wait(client, env, timeout_s)
    if as_json:
        typer.echo(json.dumps(env))
    else:
        _show(env)
    if wait and env.get("state") != "ready":
        raise typer.Exit(1)


def _wait(client: ApiClient, env: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    began = time.monotonic()
    with console.status(f"{env['id'][:16]}… {env.get('state')}") as status:

        def update(seen: dict[str, Any]) -> None:
            spent = time.monotonic() - began
            status.update(f"{seen['id'][:16]}… {seen.get('state')} ({spent:.0f} s)")

        return client.wait_environment(env["id"], timeout_s=timeout_s, on_update=update)


@env_app.command("create")
def create(
    pack: Annotated[list[str], typer.Option(help=PACK_HELP)] = [],  # noqa: B006
    from_comfyui: Annotated[
        Path | None,
        typer.Option("--from-comfyui", help="A local ComfyUI: each git checkout in custom_nodes/"),
    ] = None,
    skip: Annotated[
        list[str], typer.Option(help="With --from-comfyui: a pack folder to leave out")
    ] = [],  # noqa: B006
    wait: _Wait = False,
    timeout_s: _TimeoutS = DEFAULT_WAIT_S,
    as_json: _AsJson = False,
) -> None:
    """Ask for the environment of these packs (the same set is the same environment)."""
    with cli_errors():
        packs = [("--pack", _check_pack(text)) for text in pack]
        if from_comfyui is not None:
            packs += packs_of_comfyui(from_comfyui, skip)
        if not packs:
            raise CliError("give --pack URL@COMMIT (repeatable) or --from-comfyui DIR")
        client = _client()
        env = _create(client, packs)
    _answer(client, env, wait, timeout_s, as_json)


@env_app.command("list")
def list_environments(
    as_json: _AsJson = False,
) -> None:
    """List your environments, most recently asked for first."""
    with cli_errors():
        answer = _client().list_environments()
    if as_json:
        typer.echo(json.dumps(answer))
        return
    table = Table("id", "state", "packs", "node types", "private", "created_at")
    for env in answer.get("environments") or []:
        table.add_row(
            escape(str(env.get("id", ""))),
            escape(str(env.get("state", ""))),
            escape("\n".join(env.get("packs") or [])),
            str(len(env.get("node_types") or [])),
            "yes" if env.get("private") else "no",
            escape(str(env.get("created_at", ""))),
        )
    console.print(table)


@env_app.command("show")
def show(
    environment_id: Annotated[str, typer.Argument(help="env- and 64 hex digits")],
    wait: _Wait = False,
    timeout_s: _TimeoutS = DEFAULT_WAIT_S,
    as_json: _AsJson = False,
) -> None:
    """Show an environment (and wait for its build with --wait)."""
    with cli_errors():
        _check_id(environment_id)
        client = _client()
        env = client.get_environment(environment_id)
    _answer(client, env, wait, timeout_s, as_json)
