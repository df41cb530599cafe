#!/usr/bin/python3
"""`systemctl` for the bake rehearsal's Debian root, where no systemd runs (a chroot).

Installed as /usr/bin/systemctl in the root, so the image's scripts and the worker's poweroff
command (`sudo -n /usr/bin/systemctl poweroff`) call it unchanged. It reads the unit files the
scripts installed in /etc/systemd/system (and their `*.service.d/*.conf` drop-ins) and runs
ExecStart as systemd would: as the unit's User and Group with their supplementary groups, the
unit's SupplementaryGroups, UMask, WorkingDirectory and Environment only, after the units it
Requires. `boot` starts every enabled unit and waits until `poweroff` is asked or a unit fails.

Standard library only: it runs on the root's own python3. Verbs: daemon-reload, enable, start,
stop, restart, is-active [--quiet], poweroff, boot. `boot` first makes the `d` lines of
/etc/tmpfiles.d/*.conf, as systemd-tmpfiles-setup.service does at a VM's boot. State (pids,
logs, the poweroff record) lives in /run/comfyburst-rehearsal.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import shlex
import signal
import sys
import time
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")
TMPFILES_DIR = Path("/etc/tmpfiles.d")
STATE = Path("/run/comfyburst-rehearsal")
WANTS = UNIT_DIR / "multi-user.target.wants"
POWEROFF = STATE / "poweroff.json"
BOOT_PID = STATE / "boot.pid"
_LIST_KEYS = {"Environment", "Requires", "After", "Wants", "Before", "ExecStart"}


class UnitError(Exception):
    """A unit that is missing, malformed, or uses what this stand-in does not run."""


def parse_unit_text(text: str) -> dict[str, list[str]]:
    """A unit (or drop-in) as {key: [values]}; sections merged, continuation lines joined."""
    out: dict[str, list[str]] = {}
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;" or line.startswith("["):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise UnitError(f"not a key=value line: {raw!r}")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def environment(values: list[str]) -> dict[str, str]:
    """Environment= lines (quoted words, each NAME=VALUE) as systemd reads them."""
    env: dict[str, str] = {}
    for value in values:
        for word in shlex.split(value):
            name, sep, val = word.partition("=")
            if not sep:
                raise UnitError(f"Environment word without '=': {word!r}")
            env[name] = val
    return env


def load_unit(name: str, unit_dir: Path | None = None) -> dict[str, list[str]]:
    """The unit file plus its drop-ins, in systemd's order (drop-ins sorted, applied last)."""
    unit_dir = unit_dir or UNIT_DIR
    path = unit_dir / name
    if not path.is_file():
        raise UnitError(f"Unit {name} not found.")
    unit = parse_unit_text(path.read_text())
    for drop_in in sorted((unit_dir / f"{name}.d").glob("*.conf")):
        for key, values in parse_unit_text(drop_in.read_text()).items():
            if key in _LIST_KEYS and key != "ExecStart":
                unit.setdefault(key, []).extend(values)
            else:
                unit[key] = values
    return unit


def _words(unit: dict[str, list[str]], key: str) -> list[str]:
    return [w for v in unit.get(key, []) for w in v.split()]


def _pid_file(name: str) -> Path:
    return STATE / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def is_active(name: str) -> bool:
    """A running Type=simple unit, or a oneshot that ran with RemainAfterExit."""
    done = STATE / f"{name}.done"
    if done.exists():
        return True
    path = _pid_file(name)
    return path.exists() and _alive(int(path.read_text()))


def _drop_privileges(unit: dict[str, list[str]]) -> None:
    user = (unit.get("User") or ["root"])[-1]
    entry = pwd.getpwnam(user)
    group = (unit.get("Group") or [grp.getgrgid(entry.pw_gid).gr_name])[-1]
    gid = grp.getgrnam(group).gr_gid
    extra = [grp.getgrnam(g).gr_gid for g in _words(unit, "SupplementaryGroups")]
    os.setgid(gid)
    os.initgroups(user, gid)
    if extra:
        os.setgroups(sorted(set(os.getgroups()) | set(extra)))
    os.setuid(entry.pw_uid)


def _child_env(unit: dict[str, list[str]]) -> dict[str, str]:
    user = (unit.get("User") or ["root"])[-1]
    entry = pwd.getpwnam(user)
    # systemd's own variables for a system service, then the unit's.
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "USER": user,
        "LOGNAME": user,
        "HOME": entry.pw_dir,
        "SHELL": entry.pw_shell,
    }
    env.update(environment(unit.get("Environment", [])))
    return env


def start(name: str, seen: frozenset[str] = frozenset()) -> None:
    """Start `name` after what it Requires; a oneshot runs to its end first."""
    if name in seen:
        raise UnitError(f"dependency cycle at {name}")
    unit = load_unit(name)
    for dep in _words(unit, "Requires"):
        if not is_active(dep):
            start(dep, seen | {name})
    if is_active(name):
        return
    (exec_start,) = unit.get("ExecStart") or [""]
    argv = shlex.split(exec_start)
    if not argv or not argv[0].startswith("/"):
        raise UnitError(f"{name}: ExecStart must name an absolute path: {exec_start!r}")
    STATE.mkdir(parents=True, exist_ok=True)
    log = open(STATE / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    pid = os.fork()
    if pid == 0:  # the unit's process
        try:
            os.setsid()
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            umask = (unit.get("UMask") or ["0022"])[-1]
            os.umask(int(umask, 8))
            env = _child_env(unit)
            _drop_privileges(unit)
            os.chdir((unit.get("WorkingDirectory") or ["/"])[-1])
            os.execve(argv[0], argv, env)  # noqa: S606 - ExecStart is argv, never a shell line
        except BaseException as exc:
            os.write(2, f"{name}: failed to run {argv[0]}: {exc}\n".encode())
            os._exit(203)  # systemd's EXIT_EXEC
    log.close()
    if (unit.get("Type") or ["simple"])[-1] == "oneshot":
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise UnitError(f"{name} failed with exit code {code}")
        if (unit.get("RemainAfterExit") or ["no"])[-1] in ("yes", "true", "1"):
            (STATE / f"{name}.done").write_text("")
        return
    _pid_file(name).write_text(str(pid))


def stop(name: str, grace_s: float = 10.0) -> None:
    """SIGTERM the unit's process group, SIGKILL after `grace_s`."""
    (STATE / f"{name}.done").unlink(missing_ok=True)
    path = _pid_file(name)
    if not path.exists():
        return
    pid = int(path.read_text())
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while _alive(pid) and time.monotonic() < deadline:
            _reap()
            time.sleep(0.1)
        if not _alive(pid):
            break
    path.unlink(missing_ok=True)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def make_tmpfiles(conf_dir: Path | None = None) -> list[Path]:
    """The `d` lines of tmpfiles.d (type, path, mode, user, group): made, owned, moded."""
    made = []
    for conf in sorted((conf_dir or TMPFILES_DIR).glob("*.conf")):
        for line in conf.read_text().splitlines():
            words = line.split()
            if not words or words[0].startswith("#"):
                continue
            if words[0] != "d" or len(words) < 5:
                raise UnitError(f"{conf.name}: only `d PATH MODE USER GROUP` lines: {line!r}")
            path = Path(words[1])
            path.mkdir(parents=True, exist_ok=True)
            os.chown(path, pwd.getpwnam(words[3]).pw_uid, grp.getgrnam(words[4]).gr_gid)
            path.chmod(int(words[2], 8))
            made.append(path)
    return made


def enabled_units() -> list[str]:
    """Enabled units, ordered so each comes after what it names in After= or Requires=."""
    found = sorted(p.name for p in WANTS.glob("*.service")) if WANTS.is_dir() else []
    # The image's units (in /etc/systemd/system); the distribution's own are not rehearsed.
    names = [n for n in found if (UNIT_DIR / n).is_file()]
    if skipped := sorted(set(found) - set(names)):
        print(f"boot: not the image's units, not started: {skipped}", flush=True)
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered or name not in names:
            return
        if name in path:
            raise UnitError(f"ordering cycle at {name}")
        unit = load_unit(name)
        for dep in _words(unit, "After") + _words(unit, "Requires"):
            visit(dep, (*path, name))
        ordered.append(name)

    for name in names:
        visit(name, ())
    return ordered


def enable(names: list[str]) -> None:
    """What `systemctl enable` does for WantedBy=multi-user.target units: the wants link."""
    WANTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        unit = load_unit(name)
        if "multi-user.target" not in _words(unit, "WantedBy"):
            raise UnitError(f"{name} is not WantedBy=multi-user.target")
        link = WANTS / name
        if not link.is_symlink():
            link.symlink_to(UNIT_DIR / name)


def poweroff() -> None:
    """Record who asked (the VM's power-off, as the rehearsal observes it) and end the boot."""
    STATE.mkdir(parents=True, exist_ok=True)
    record = {"uid": os.getuid(), "sudo_user": os.environ.get("SUDO_USER"), "time": time.time()}
    POWEROFF.write_text(json.dumps(record))
    if BOOT_PID.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(BOOT_PID.read_text()), signal.SIGTERM)


def boot() -> int:
    """Start the enabled units; wait for a power-off (0) or a unit's exit (1); stop them all."""
    STATE.mkdir(parents=True, exist_ok=True)
    POWEROFF.unlink(missing_ok=True)
    BOOT_PID.write_text(str(os.getpid()))
    halted = []
    signal.signal(signal.SIGTERM, lambda *_: halted.append(True))
    units = enabled_units()
    print(f"boot: starting {units}", flush=True)
    code = 0
    try:
        made = make_tmpfiles()
        print(f"boot: tmpfiles made {[str(p) for p in made]}", flush=True)
        for name in units:
            start(name)
        while not halted:
            _reap()
            dead = [u for u in units if not is_active(u)]
            if dead:
                print(f"boot: unit(s) exited: {dead}; see {STATE}/<unit>.log", flush=True)
                code = 1
                break
            time.sleep(0.2)
    except UnitError as exc:
        print(f"boot: {exc}", flush=True)
        code = 1
    for name in reversed(units):
        stop(name)
    print("boot: powered off" if halted else "boot: halted", flush=True)
    return code


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    quiet = "--quiet" in argv or "-q" in argv
    if not args:
        print("usage: systemctl VERB [UNIT...]", file=sys.stderr)
        return 2
    verb, names = args[0], args[1:]
    try:
        if verb == "daemon-reload":
            return 0
        if verb == "enable":
            enable(names)
        elif verb == "start":
            for name in names:
                start(name)
        elif verb == "stop":
            for name in names:
                stop(name)
        elif verb == "restart":
            for name in names:
                stop(name)
                start(name)
        elif verb == "is-active":
            active = all(is_active(n) for n in names)
            if not quiet:
                print("active" if active else "inactive")
            return 0 if active else 3
        elif verb == "poweroff":
            poweroff()
        elif verb == "boot":
            return boot()
        else:
            print(f"systemctl (rehearsal): unsupported verb {verb}", file=sys.stderr)
            return 1
    except UnitError as exc:
        print(f"systemctl (rehearsal): {exc}", file=sys.stderr)
        return 5
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
