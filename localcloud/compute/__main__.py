"""`python -m localcloud.compute --config FILE.json [--host H] [--port P]`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from localcloud.compute._config import ComputeStandinConfig
from localcloud.compute._standin import ComputeStandin


def main(argv: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; print `READY <base_url>` once listening."""
    parser = argparse.ArgumentParser(prog="python -m localcloud.compute")
    parser.add_argument("--config", type=Path, required=True, help="JSON ComputeStandinConfig")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    config = ComputeStandinConfig.model_validate_json(args.config.read_text())
    standin = ComputeStandin(config, host=args.host, port=args.port)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    print(f"READY {standin.start()}", flush=True)
    try:
        stopping.wait()
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
