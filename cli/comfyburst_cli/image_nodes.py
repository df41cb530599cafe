"""`comfyburst image nodes --from-comfyui DIR`: the GPU image's custom-node list from the
packs of a local ComfyUI, so the next bake has the nodes its workflows use."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import typer

from comfyburst.custom_nodes import Pack, PackError, local_packs
from comfyburst_cli._errors import CliError, cli_errors, errors

image_app = typer.Typer(help="The GPU image: what it is baked with.")
DEFAULT_LIST = Path("gpu_image/custom_nodes.txt")
# This package's own node runs on the local ComfyUI only; the GPU image never needs it.
OWN_NODE_PROJECT = "comfyburst-node"


def _is_own_node(pack: Pack) -> bool:
    pyproject = pack.folder / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False
    return bool(project.get("name") == OWN_NODE_PROJECT)


def render_list(header: list[str], packs: list[Pack]) -> str:
    """The list file: its comment header as it was, then one pack a line."""
    problems: list[str] = []
    lines: list[str] = []
    for pack in packs:
        try:
            lines.append(pack.line())
        except PackError as exc:
            problems.append(str(exc))
    if problems:
        raise CliError(
            "these packs cannot be listed (fix them or leave them out with --skip NAME):\n  "
            + "\n  ".join(problems)
        )
    return "\n".join([*header, *lines]) + "\n"


def header_of(path: Path) -> list[str]:
    """The leading comment lines of an existing list (none for a new file)."""
    if not path.exists():
        return ["# Custom nodes baked into the GPU image: NAME HTTPS_GIT_URL COMMIT_SHA (40 hex)."]
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    return header


@image_app.command("nodes")
def nodes(
    from_comfyui: Annotated[
        Path, typer.Option("--from-comfyui", help="A local ComfyUI folder (with custom_nodes/)")
    ],
    out: Annotated[Path, typer.Option(help="The list the image build reads")] = DEFAULT_LIST,
    skip: Annotated[list[str], typer.Option(help="A pack folder to leave out")] = [],  # noqa: B006
) -> None:
    """Write the image's custom-node list from a local ComfyUI's packs (git remote + commit)."""
    with cli_errors():
        packs = [
            p
            for p in local_packs(from_comfyui / "custom_nodes")
            if p.name not in skip and not _is_own_node(p)
        ]
        text = render_list(header_of(out), packs)
        for pack in packs:
            if pack.dirty:
                errors.print(f"warning: {pack.name} has local changes the commit does not hold")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {len(packs)} pack(s) to {out}")
    for pack in packs:
        typer.echo(f"  {pack.describe()}")
