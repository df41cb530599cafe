"""Follow the results topic: print each result message once, as it arrives.

Pub/Sub delivers at least once, and the emulator stores subscription filters without applying
them, so this consumer checks the attributes itself and dedupes on job_id + status.

Run: `python -m comfyburst_cli.watch projects/P/subscriptions/S [--max-messages N]
[--timeout-s S] [--job-id ID ...] [--json]` (PUBSUB_EMULATOR_HOST for the local cloud).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from comfyburst.schema import ResultMessage
from comfyburst_cli._errors import EXIT_ERROR, CliError, report

log = logging.getLogger("comfyburst_cli.watch")
SUBSCRIPTION_PREFIX = "projects/"


class StreamEnded(CliError):
    """The subscription's stream ended by itself (no such subscription, no access, ...)."""


def subscription_path(name: str, project: str | None) -> str:
    """`projects/P/subscriptions/S` as given, or a bare `S` in `project`."""
    name = name.strip()
    if name.startswith(SUBSCRIPTION_PREFIX):
        parts = name.split("/")
        if len(parts) != 4 or parts[2] != "subscriptions" or not parts[1] or not parts[3]:
            raise CliError(f"subscription {name!r}: expected projects/P/subscriptions/S")
        return name
    if not name or "/" in name:
        raise CliError(f"subscription {name!r}: expected projects/P/subscriptions/S or S")
    if not project:
        raise CliError(
            f"subscription {name!r} has no project: give projects/P/subscriptions/{name}"
            " or set COMFYBURST_PROJECT_ID"
        )
    return f"projects/{project}/subscriptions/{name}"


OnResult = Callable[[ResultMessage, float], None]


def format_result(message: ResultMessage) -> str:
    """One human line per result (a second line per output)."""
    head = f"{message.job_id}  {message.status.value}  attempt {message.attempt}"
    if message.timings.total_s is not None:
        head += f"  {message.timings.total_s:.1f} s"
    if message.error is not None:
        head += f"  [{message.error.type}] {message.error.message}"
    lines = [head]
    for output in message.outputs:
        lines.append(f"    {output.name}  {output.signed_url or output.gs_uri}")
    return "\n".join(lines)


class ResultFilter:
    """Accepts each (job_id, status) once, only for the wanted jobs and statuses."""

    def __init__(
        self, job_ids: Iterable[str] | None = None, statuses: Iterable[str] | None = None
    ) -> None:
        self.job_ids = set(job_ids) if job_ids else None
        self.statuses = set(statuses) if statuses else None
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def accept(self, data: bytes, attributes: dict[str, str]) -> ResultMessage | None:
        """The message if it is new and wanted; None to ack and drop it."""
        job_id, status = attributes.get("job_id"), attributes.get("status")
        if not job_id or not status:
            log.warning("dropping a message without job_id/status attributes")
            return None
        if (self.job_ids is not None and job_id not in self.job_ids) or (
            self.statuses is not None and status not in self.statuses
        ):
            return None
        try:
            message = ResultMessage.model_validate_json(data)
        except ValidationError as exc:
            log.warning("dropping an invalid result for %s: %s", job_id, exc.errors()[:1])
            return None
        if (message.job_id, message.status.value) != (job_id, status):
            log.warning("dropping a result whose attributes do not match its body (%s)", job_id)
            return None
        with self._lock:
            key = (job_id, status)
            if key in self._seen:
                return None
            self._seen.add(key)
        return message


def watch(
    subscription_path: str,
    *,
    max_messages: int | None = None,
    timeout_s: float | None = None,
    job_ids: Iterable[str] | None = None,
    statuses: Iterable[str] | None = None,
    json_output: bool = False,
    emit: Callable[[str], None] | None = None,
    on_result: OnResult | None = None,
    subscriber: Any = None,
    ready: threading.Event | None = None,
) -> list[ResultMessage]:
    """Stream results until `max_messages` distinct ones arrived, `timeout_s` passed, or ^C.

    Every message is acked (a duplicate or an unwanted one as well: this subscription is ours).
    `on_result` gets each new result with its `time.monotonic()` arrival time. Returns them.
    """
    from google.cloud import pubsub_v1  # type: ignore[attr-defined,unused-ignore]

    emit = emit or (lambda line: print(line, flush=True))
    accept = ResultFilter(job_ids, statuses)
    results: list[ResultMessage] = []
    done = threading.Event()
    lock = threading.Lock()

    def callback(message: Any) -> None:
        arrived = time.monotonic()
        result = accept.accept(message.data, dict(message.attributes))
        message.ack()
        if result is None:
            return
        with lock:
            if done.is_set():
                return
            results.append(result)
            if on_result is not None:
                on_result(result, arrived)
            emit(result.model_dump_json() if json_output else format_result(result))
            if max_messages is not None and len(results) >= max_messages:
                done.set()

    own_client = subscriber is None
    client = subscriber or pubsub_v1.SubscriberClient()
    future = client.subscribe(subscription_path, callback=callback)
    # A stream that fails (no such subscription, no permission) ends the wait at once.
    future.add_done_callback(lambda _future: done.set())
    if ready is not None:
        ready.set()
    failure: BaseException | None = None
    try:
        done.wait(timeout_s)
    except KeyboardInterrupt:
        pass
    finally:
        ended_by_itself = future.done()
        future.cancel()
        try:
            future.result(timeout=10)
        except Exception as exc:
            if ended_by_itself:
                failure = exc
            else:  # a stream we cancelled may end with an error by design
                log.debug("stream closed", exc_info=True)
        if own_client:
            client.close()
    if failure is not None:
        raise StreamEnded(f"the stream of {subscription_path} ended: {failure}") from failure
    with lock:
        return list(results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyburst_cli.watch", description=__doc__)
    parser.add_argument("subscription", help="projects/P/subscriptions/S")
    parser.add_argument("--max-messages", type=int, default=None)
    parser.add_argument("--timeout-s", type=float, default=None)
    parser.add_argument("--job-id", action="append", default=None, help="only these jobs")
    parser.add_argument("--status", action="append", default=None, help="only these states")
    parser.add_argument("--json", action="store_true", help="one JSON result per line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        watch(
            subscription_path(args.subscription, os.environ.get("COMFYBURST_PROJECT_ID")),
            max_messages=args.max_messages,
            timeout_s=args.timeout_s,
            job_ids=args.job_id,
            statuses=args.status,
            json_output=args.json,
        )
    except CliError as exc:
        report(str(exc))
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
