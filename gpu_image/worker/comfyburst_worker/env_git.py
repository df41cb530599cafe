"""A git pack checked out at its pinned commit, only if that commit is the named repository's.

Git hosts keep a repository and its forks in one object store (a fork network) and serve any
object of it through each member's URL: a commit pushed to an attacker's fork is fetched by id
through `https://host/trusted-owner/repo`, so an owner-based allowlist would build the
attacker's code as the trusted, shared environment. Servers may also answer a `want` of an
object no ref advertises (git's `uploadpack.allowReachableSHA1InWant` and
`uploadpack.allowAnySHA1InWant`; protocol v2 servers and dumb http serve any object they hold).
So, after the commit is fetched, the repository's own branches and tags are fetched (commits
only, `--filter=tree:0`, where the server filters; the whole history where it does not) and
the commit must be an ancestor of one of them, else the build fails naming the pack. Refs a
host adds beside branches and tags (`refs/pull/*`, anyone's to push to) do not count.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from comfyburst_worker.env_build_errors import BuildFailed

# (args, pack text, what, **kw) -> the finished command; raises BuildFailed when it failed.
Command = Callable[..., subprocess.CompletedProcess[str]]
# The repository's own refs, under names the layer's checkout keeps apart from anything else.
_REFSPECS = ("+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*")


@dataclass(frozen=True)
class GitPack:
    """A pinned git pack: its URL, its commit, the folder it is checked out into."""

    url: str
    commit: str

    @property
    def text(self) -> str:
        return f"{self.url}@{self.commit}"

    @property
    def folder(self) -> str:
        return urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")


def checkout(
    cmd: Command, home: Callable[[Sequence[str]], list[str]], pack: GitPack, target: Path
) -> None:
    """Check `pack` out into the new folder `target`; BuildFailed naming the pack otherwise.
    `cmd` runs a command as the build's user, `home` gives it the build's own HOME."""
    # Only the scheme the pack's URL was checked with: git never follows a URL to `ext::`,
    # `file` or `ssh` on a redirect or in a submodule.
    env = {"GIT_ALLOW_PROTOCOL": urlsplit(pack.url).scheme}
    cmd(home(["git", "init", "-q", str(target)]), pack.text, "git init", env=env)
    git = home(["git", "-C", str(target)])
    cmd([*git, "remote", "add", "origin", pack.url], pack.text, "git remote", env=env)
    try:
        cmd(
            [*git, "fetch", "-q", "origin", pack.commit],
            pack.text,
            "git fetch of the commit",
            env=env,
        )
    except BuildFailed:
        # Servers that do not serve a commit by id (old ones): the whole history.
        cmd([*git, "fetch", "-q", "origin"], pack.text, "git fetch", env=env)
    try:
        cmd([*git, "checkout", "-q", "--detach", pack.commit], pack.text, "checkout", env=env)
    except BuildFailed as exc:
        raise BuildFailed(
            pack.text, f"commit {pack.commit} does not exist in {pack.url}", exc.tail
        ) from None
    _check_reachable(cmd, git, pack, env)


def _check_reachable(cmd: Command, git: list[str], pack: GitPack, env: dict[str, str]) -> None:
    fetch, what = [*git, "fetch", "-q", "--no-tags"], "git fetch of the refs"
    try:
        # Commits only where the server filters (a server that does not ignores the filter).
        cmd([*fetch, "--filter=tree:0", "origin", *_REFSPECS], pack.text, what, env=env)
    except BuildFailed:
        cmd([*fetch, "origin", *_REFSPECS], pack.text, what, env=env)
    contains = [
        *git,
        "for-each-ref",
        "--count=1",
        "--format=%(refname)",
        "--contains",
        pack.commit,
        "refs/remotes/origin/",
        "refs/tags/",
    ]
    done = cmd(contains, pack.text, "looking up the commit's branches and tags", env=env)
    if not done.stdout.strip():
        raise BuildFailed(
            pack.text,
            f"commit {pack.commit} is not on any branch or tag of {pack.url} (a fork's or a "
            "pull request's commit is served through the repository's URL too; pin one the "
            "repository itself holds)",
        )
