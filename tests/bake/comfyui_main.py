"""`main.py` of the ComfyUI stand-in tree the bake rehearsal places where ComfyUI would be.

It takes ComfyUI's own command line (as comfyui.service passes it) and serves the stand-in from
ComfyUI's folders next to this file, so the unit runs unchanged. Not ComfyUI: see
localcloud/comfyui_standin.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _folder(path: str) -> str:
    if not Path(path).is_dir():
        raise argparse.ArgumentTypeError(f"{path} is not a folder")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(prog="main.py")
    parser.add_argument("--listen", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--disable-auto-launch", action="store_true")
    parser.add_argument("--extra-model-paths-config", action="append", default=[])
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--preview-method", default="none")  # comfyui.service passes auto
    parser.add_argument("--user-directory", type=_folder)  # as ComfyUI: it must exist
    parser.add_argument("--database-url")
    args = parser.parse_args()
    for config in args.extra_model_paths_config:
        if not Path(config).is_file():
            print(f"extra model paths config not found: {config}", file=sys.stderr)
            return 2
    from localcloud.comfyui_standin.__main__ import main as standin_main

    argv = ["--host", args.listen, "--port", str(args.port)]
    argv += ["--preview-method", args.preview_method]
    for name in ("input", "output", "temp"):
        argv += [f"--{name}-dir", str(HERE / name)]
    return int(standin_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main())
