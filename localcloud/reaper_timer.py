"""Local Cloud Scheduler stand-in: POST the reaper URL every period.

Run: `python -m localcloud.reaper_timer --url URL --period-s 3`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

import requests

log = logging.getLogger("localcloud.reaper_timer")


def tick(session: requests.Session, url: str, timeout_s: float) -> int | None:
    """One scheduler call; the status code, or None when the reaper did not answer."""
    try:
        response = session.post(url, json={}, timeout=timeout_s)
    except requests.RequestException as exc:
        log.warning("reaper call failed: %s", exc)
        return None
    if response.status_code >= 300:
        log.warning("reaper answered %s: %s", response.status_code, response.text[:500])
    return response.status_code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localcloud.reaper_timer")
    parser.add_argument("--url", required=True)
    parser.add_argument("--period-s", type=float, default=3.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    session = requests.Session()
    print(f"READY {args.url} every {args.period_s}s", flush=True)
    # Like Cloud Scheduler: fixed period, whether or not the previous call succeeded.
    while not stop.wait(args.period_s):
        tick(session, args.url, timeout_s=max(args.period_s * 10, 30.0))


if __name__ == "__main__":
    main()
