"""No process of the build's user outlives a build: ended and checked before and after each one.

Pack code that a build runs (pip, the import probe) may start a process that detaches (a double
fork, `setsid`): it runs on as the build's user, outside any unit (no restart of comfyui.service
reaches it), and could wait for the next build to write into its folder. The worker therefore
runs `REAP_SCRIPT` through `env_build_as`, AS the build's user, which:

- refuses to run as any other user (root, the worker's, or not the named build user: the prefix
  might name ComfyUI's user, whose ComfyUI would die with it) before it signals anything;
- sends SIGKILL to pid -1 until /proc lists no live process of its uid. kill(2): pid -1 reaches
  every process the caller may signal except init (Linux: and not the caller); an unprivileged
  caller may signal a process whose real or saved set-user-ID is its real or effective user ID.
  A zombie is not counted: it runs nothing and goes when its parent (init, after the kill)
  reaps it;
- removes what that user left in /tmp, /var/tmp, /dev/shm (POSIX shared memory) and
  /dev/mqueue (POSIX message queues: unlinking the file removes the queue), and its System V
  shared memory, semaphores and message queues (the owner may IPC_RMID them).

Before it runs the script, the worker refuses a build user that owns one of ComfyUI's folders
(input, output, temp): that is ComfyUI's user, and the kill would end ComfyUI with every build.

It prints one JSON line; `BuildReaper.reap` raises `ProcessesLeft` when a process survived,
the script refused, or it did not answer.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from comfyburst_worker.env_build_errors import BuildFailed, tail_of

REAP_SCRIPT = r"""
import ctypes, json, os, pwd, shutil, signal, sys, time
user, worker_uid, wait_s = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
uid = os.getuid()
name = pwd.getpwuid(uid).pw_name
if uid in (0, worker_uid) or os.geteuid() != uid or name != user:
    print(json.dumps({"refused": f"runs as {name} (uid {uid}), not the build user {user}"}))
    sys.exit(2)
me = os.getpid()

def live():
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/status") as stream:
                rows = dict(r.split(":", 1) for r in stream.read().splitlines() if ":" in r)
        except OSError:
            continue
        ids = rows.get("Uid", "").split()
        if len(ids) == 4 and uid in (int(ids[0]), int(ids[2])):
            if rows.get("State", "").split()[:1] not in (["Z"], ["X"]):
                pids.append(int(entry))
    return sorted(pids)

deadline = time.monotonic() + wait_s
while True:
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    left = live()
    if not left or time.monotonic() > deadline:
        break
    time.sleep(0.05)

removed = 0
for top in ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue"):
    try:
        entries = list(os.scandir(top))
    except OSError:
        continue
    for entry in entries:
        try:
            if entry.stat(follow_symlinks=False).st_uid != uid:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except OSError:
            pass
libc = ctypes.CDLL(None, use_errno=True)
for kind, owner_col, remove in (
    ("shm", 7, lambda i: libc.shmctl(i, 0, None)),
    ("msg", 7, lambda i: libc.msgctl(i, 0, None)),
    ("sem", 4, lambda i: libc.semctl(i, 0, 0)),
):
    try:
        with open(f"/proc/sysvipc/{kind}") as stream:
            rows = [r.split() for r in stream.read().splitlines()[1:]]
    except OSError:
        continue
    for row in rows:
        if len(row) > owner_col and int(row[owner_col]) == uid and remove(int(row[1])) == 0:
            removed += 1
print(json.dumps({"left": left, "removed": removed}))
sys.exit(3 if left else 0)
"""

Runner = Callable[..., subprocess.CompletedProcess[str]]


class ProcessesLeft(BuildFailed):
    """A process of the build's user survives (or the reap could not be run or checked)."""


@dataclass
class BuildReaper:
    """Ends every process of `user` through `as_user`, with the base interpreter `python`."""

    user: str
    as_user: tuple[str, ...]
    python: Path
    wait_s: float = 10.0
    worker_uid: int = field(default_factory=os.getuid)
    run: Runner = field(default=subprocess.run)
    # ComfyUI's folders (input, output, temp: its user's own): a build user owning one is
    # ComfyUI's user, whose ComfyUI the kill would end with every build.
    comfyui_folders: tuple[Path, ...] = ()

    def argv(self) -> list[str]:
        """The command line: `-I` so nothing in the build user's reach is imported first."""
        script = [str(self.python), "-I", "-c", REAP_SCRIPT, self.user, str(self.worker_uid)]
        return [*self.as_user, *script, str(self.wait_s)]

    def reap(self, when: str) -> int:
        """Ends the user's processes; how many leftovers it removed. `when` names the moment
        (before/after the build) in the error; raises ProcessesLeft."""
        self._refuse_comfyuis_user(when)
        try:
            done = self.run(
                self.argv(),
                capture_output=True,
                text=True,
                timeout=self.wait_s + 60.0,
                check=False,
            )
        except (subprocess.TimeoutExpired, OSError) as exc:
            message = f"ending the build user's processes {when} broke: {exc}"
            raise ProcessesLeft(None, message) from None
        lines = (done.stdout or "").strip().splitlines()
        try:
            answer = json.loads(lines[-1]) if lines else {}
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if done.returncode == 0 and answer.get("left") == []:
            return int(answer.get("removed", 0))
        if answer.get("left"):
            pids = ", ".join(str(p) for p in answer["left"][:10])
            message = f"processes of the build user {self.user} survive {when}: {pids}"
        elif "refused" in answer:
            message = f"ending the build user's processes refused {when}: {answer['refused']}"
        else:
            message = f"ending the build user's processes failed {when} (exit {done.returncode})"
        raise ProcessesLeft(None, message, tail_of(done))

    def _refuse_comfyuis_user(self, when: str) -> None:
        """ProcessesLeft before anything runs where the build user owns one of ComfyUI's
        folders (the script itself refuses root and the worker's user)."""
        try:
            uid = pwd.getpwnam(self.user).pw_uid
        except KeyError:
            return  # no such user here: the prefix fails to run as it, and the script says so
        for folder in self.comfyui_folders:
            try:
                owner = folder.stat().st_uid
            except OSError:
                continue
            if owner == uid:
                message = (
                    f"ending the build user's processes refused {when}: the build user "
                    f"{self.user} owns ComfyUI's folder {folder} (builds need a user of their "
                    "own: env_build_user)"
                )
                raise ProcessesLeft(None, message)


def of_settings(
    user: str, as_user: Sequence[str], python: Path | None, comfyui_folders: Sequence[Path] = ()
) -> BuildReaper | None:
    """The reaper of a worker whose builds run as `user`; None where builds have no own user."""
    if not user.strip() or not as_user or python is None:
        return None
    folders = tuple(comfyui_folders)
    return BuildReaper(user.strip(), tuple(as_user), python, comfyui_folders=folders)
