"""`python -m localcloud.comfyui_standin`: serve the ComfyUI stand-in until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys

from ._custom_nodes import load_custom_nodes
from ._layer import LayerFileError, activate, read_layer
from ._paths import Dirs
from .app import build_app, start
from .faults import ExecutionErrorFault, Faults
from .previews import PREVIEW_METHODS


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m localcloud.comfyui_standin",
        description="ComfyUI STAND-IN (not ComfyUI): ComfyUI's HTTP/websocket protocol, "
        "image-only core nodes.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188, help="0 picks a free port")
    parser.add_argument("--input-dir", required=True)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--temp-dir", required=True)
    parser.add_argument(
        "--preview-method",
        choices=PREVIEW_METHODS,
        default="none",
        help="as ComfyUI's: not none = the sampler sends preview frames",
    )
    parser.add_argument(
        "--custom-nodes-dir",
        action="append",
        default=[],
        help="a folder of custom-node packs to load (ComfyUI's extra custom_nodes path)",
    )
    parser.add_argument(
        "--layer-file",
        help="the active layer file (JSON environment_id, custom_nodes, site_packages); "
        "no file = the base environment",
    )
    parser.add_argument("--faults-json", help="a whole fault set as JSON (see faults.py)")
    parser.add_argument("--fault-error-class", help="node class that raises at run time")
    parser.add_argument("--fault-error-node", help="node id that raises at run time")
    parser.add_argument("--fault-slow-class", help="node class that is slow")
    parser.add_argument("--fault-slow-s", type=float, default=0.0, help="its total seconds")
    parser.add_argument("--fault-sampler-steps", type=int, default=0, help="its progress steps")
    parser.add_argument("--fault-drop-ws-after", type=int, help="close sockets after N messages")
    parser.add_argument("--fault-history-delay-s", type=float, default=0.0)
    return parser.parse_args(argv)


def faults_from_args(args: argparse.Namespace) -> Faults:
    """The fault set the flags describe (`--faults-json` first, single flags override)."""
    base = json.loads(args.faults_json) if args.faults_json else {}
    if args.fault_error_class or args.fault_error_node:
        error = ExecutionErrorFault(
            class_type=args.fault_error_class, node_id=args.fault_error_node
        )
        base["execution_error"] = error.model_dump()
    if args.fault_slow_class:
        base["slow_node_class"] = args.fault_slow_class
    if args.fault_slow_s:
        base["slow_node_s"] = args.fault_slow_s
    if args.fault_sampler_steps:
        base["sampler_steps"] = args.fault_sampler_steps
    if args.fault_drop_ws_after is not None:
        base["drop_ws_after_messages"] = args.fault_drop_ws_after
    if args.fault_history_delay_s:
        base["history_delay_s"] = args.fault_history_delay_s
    return Faults.model_validate(base)


async def _serve(args: argparse.Namespace) -> None:
    dirs = Dirs.create(args.input_dir, args.output_dir, args.temp_dir)
    try:
        layer = read_layer(args.layer_file)
    except LayerFileError as exc:
        raise SystemExit(f"ComfyUI stand-in: {exc}") from exc
    app = build_app(
        dirs,
        faults_from_args(args),
        preview_method=args.preview_method,
        custom_nodes=load_custom_nodes([*args.custom_nodes_dir, *activate(layer)]),
        environment_id=layer.environment_id,
    )
    runner, port = await start(app, args.host, args.port)
    print(f"READY http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    asyncio.run(_serve(_parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
