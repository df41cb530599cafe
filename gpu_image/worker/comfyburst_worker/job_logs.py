"""A job's log: what ComfyUI printed during the job's run, stored beside its outputs.

ComfyUI keeps its recent output in memory (the last few hundred writes to stdout/stderr) and
serves it at `GET /internal/logs/raw` as `{"entries": [{"t", "m"}], "size": {...}}`, each `t`
the naive local ISO time of one write, each `m` the text written (part of a line, a line, or
several; see tests/test_data/comfyui_logs/). ComfyUI runs one prompt at a time and the agent
runs one job at a time, so the writes stamped within a run's window are that job's only. Both
units run with TZ=UTC (comfyui.service, comfyburst-worker.service): local time is UTC, which
never repeats an hour as a daylight-saving zone does.

Nothing here fails a job: a log that cannot be read or stored is a warning.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar, cast

from comfyburst.domain.job_logs import LOG_CONTENT_TYPE, bound_log, job_log_object
from comfyburst.ports import BlobStore
from comfyburst_worker.comfy_client import ComfyClient

log = logging.getLogger(__name__)
_Run = TypeVar("_Run", bound=Callable[..., Any])

LOGS_PATH = "/internal/logs/raw"
_TIMEOUT_S = 10.0
# ComfyUI keeps 300 writes; even long tracebacks stay far below this. More is not its log.
MAX_RAW_BYTES = 16 * 1024 * 1024


def local_now() -> datetime:
    """Now as ComfyUI stamps its log entries: naive local time (it runs on this host)."""
    return datetime.now()


def entry_time(value: Any) -> datetime | None:
    """An entry's time as naive local time, or None when it is not an ISO time."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone().replace(tzinfo=None)
    return stamp


def window_text(entries: Any, since: datetime, until: datetime) -> str:
    """The text of the entries stamped from `since` to `until` (both included), in order;
    malformed entries are skipped. A carriage return redraws its line, as in a terminal, so a
    progress bar leaves only its last state."""
    pieces: list[str] = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("m"), str):
            continue
        stamp = entry_time(entry.get("t"))
        if stamp is not None and since <= stamp <= until:
            pieces.append(entry["m"])
    lines = "".join(pieces).split("\n")
    return "\n".join(_redrawn(line) for line in lines)


def _redrawn(line: str) -> str:
    if "\r" not in line:
        return line
    drawn = [part for part in line.split("\r") if part]
    return drawn[-1] if drawn else ""


def fetch_entries(comfy: ComfyClient) -> list[Any]:
    """ComfyUI's recent log entries; raises on any failure to get them."""
    url = f"{comfy.base_url}{LOGS_PATH}"
    with comfy.session.get(url, timeout=_TIMEOUT_S, stream=True) as resp:
        resp.raise_for_status()
        body = bytearray()
        for chunk in resp.iter_content(64 * 1024):
            body += chunk
            if len(body) > MAX_RAW_BYTES:
                raise ValueError(f"{LOGS_PATH} answered more than {MAX_RAW_BYTES} bytes")
    answer = json.loads(bytes(body))
    entries = answer.get("entries") if isinstance(answer, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{LOGS_PATH} answered no entries list")
    return entries


def store_job_log(
    comfy: ComfyClient,
    blobs: BlobStore,
    bucket: str,
    job_id: str,
    since: datetime,
    until: datetime | None = None,
) -> bool:
    """Store what ComfyUI printed from `since` to `until` (default: now) as the job's log,
    bounded; False when nothing was printed or it could not be read or stored (a warning)."""
    try:
        end = until if until is not None else local_now()
        text = bound_log(window_text(fetch_entries(comfy), since, end))
        if not text.strip():
            return False
        blobs.write(bucket, job_log_object(job_id), text.encode(), LOG_CONTENT_TYPE)
        return True
    except Exception as exc:
        # Only the type: a requests error's text can carry a URL.
        log.warning("job %s: ComfyUI's log not stored (%s)", job_id, type(exc).__name__)
        return False


def stores_job_log(run: _Run) -> _Run:
    """Wraps `JobRunner.run`: the window opens as the run starts and closes when its result is
    known; a result that is still ours (a status) gets its log stored before the agent writes
    the done flag. A run that is no longer ours stores none (another attempt may own the job)."""

    @functools.wraps(run)
    def logged(runner: Any, job: Any, *args: Any, **kwargs: Any) -> Any:
        since = local_now()
        result = run(runner, job, *args, **kwargs)
        if result.status is not None:
            s = runner.s
            store_job_log(s.comfy, s.blobs, s.config.outputs_bucket, job.job_id, since)
        return result

    return cast(_Run, logged)
