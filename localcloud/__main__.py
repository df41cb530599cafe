"""`python -m localcloud up|down|status|env`: the local cloud for `make up` / `make down`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from localcloud import _procs, real_comfyui
from localcloud.cloud import EmulatorsMissing, LocalCloud
from localcloud.config import REPO_ROOT, LocalCloudConfig


def _config(args: argparse.Namespace) -> LocalCloudConfig:
    config = LocalCloudConfig(state_dir=Path(args.state_dir).resolve())
    if getattr(args, "ephemeral", False):
        config = LocalCloudConfig.ephemeral(config.state_dir)
    overrides: dict[str, object] = {}
    if getattr(args, "pool_size", None) is not None:
        overrides["pool_size"] = args.pool_size
    if getattr(args, "reaper_period_s", None) is not None:
        overrides["reaper_period_s"] = args.reaper_period_s
    # COMFYUI_DIR / COMFYUI_URL: a real ComfyUI for the VMs (one, so one VM unless told); not
    # for --ephemeral clouds (tests', which may run with COMFYUI_DIR set for the node tests).
    comfyui = (
        None
        if getattr(args, "ephemeral", False)
        else real_comfyui.from_env(config.state_dir / "comfyui")
    )
    if comfyui is not None:
        overrides["comfyui"] = comfyui
        overrides.setdefault("pool_size", 1)
    if overrides:
        from dataclasses import replace

        config = replace(config, **overrides)  # type: ignore[arg-type]
    return config


def _up(args: argparse.Namespace) -> int:
    cloud = LocalCloud(_config(args))
    try:
        cloud.start()
    except EmulatorsMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    except (_procs.StartupError, RuntimeError) as exc:
        print(f"local cloud did not start: {exc}", file=sys.stderr)
        return 1
    print(cloud.env_text(), end="")
    if cloud.comfyui_advice:
        print(f"# {cloud.comfyui_advice}".replace("\n", "\n# "), file=sys.stderr)
    names = ", ".join(
        f"{s.name} {s.ready_s:.1f}s" if s.ready_s is not None else s.name for s in cloud.services
    )
    print(
        f"# local cloud up in {cloud.startup_s:.1f}s: {names}\n"
        f"# env: source {cloud.config.env_file}   logs: {cloud.config.state_dir / 'logs'}",
        file=sys.stderr,
    )
    return 0


def _down(args: argparse.Namespace) -> int:
    leftovers = LocalCloud(_config(args)).stop()
    if leftovers:
        print(f"still running: {', '.join(leftovers)}", file=sys.stderr)
        return 1
    env_file = _config(args).env_file
    if env_file.exists():
        env_file.unlink()
    print("local cloud stopped", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    services = _procs.recorded(_config(args).state_dir)
    if not services:
        print("local cloud is not running")
        return 3
    for service in services:
        state = "running" if service.alive() else "DEAD"
        print(f"{service.name:14} pid {service.pid:<8} {state:8} {service.log_path}")
    return 0 if all(s.alive() for s in services) else 1


def _env(args: argparse.Namespace) -> int:
    env_file = _config(args).env_file
    if not env_file.exists():
        print("local cloud is not running (no env file)", file=sys.stderr)
        return 3
    print(env_file.read_text(), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcloud")
    parser.add_argument(
        "--state-dir", default=str(REPO_ROOT / ".localcloud"), help="pids, logs, env file"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start everything and print the env")
    up.add_argument("--pool-size", type=int)
    up.add_argument("--reaper-period-s", type=float)
    up.add_argument("--ephemeral", action="store_true", help="free ports instead of fixed ones")
    up.set_defaults(func=_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(func=_down)
    sub.add_parser("status", help="list the services and whether they run").set_defaults(
        func=_status
    )
    sub.add_parser("env", help="print the env file").set_defaults(func=_env)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
