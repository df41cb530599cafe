"""A job's log: what ComfyUI printed while the job ran, as one bounded text object. Pure, no I/O.

The worker writes it once per run, before the done flag, in the outputs bucket beside the
job's outputs (not under `outputs/`, so it is never an output); `GET /api/v2/jobs/{id}/logs`
serves it. Both bound it with `bound_log`, the one rule for how much of it there may be.
"""

from __future__ import annotations

# A tail a person reads in a terminal: the last thousand lines, at most 64 KiB of UTF-8.
MAX_LOG_BYTES = 64 * 1024
MAX_LOG_LINES = 1000
LOG_CONTENT_TYPE = "text/plain; charset=utf-8"


def job_log_object(job_id: str) -> str:
    """The object name of a job's log in the outputs bucket."""
    return f"jobs/{job_id}/logs.txt"


def bound_log(text: str, max_bytes: int = MAX_LOG_BYTES, max_lines: int = MAX_LOG_LINES) -> str:
    """The tail of `text`: its last whole lines within both bounds (a single last line longer
    than `max_bytes` keeps only its end). Lines end with a newline."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    kept: list[str] = []
    size = 0
    for line in reversed(lines[-max_lines:] if max_lines > 0 else []):
        encoded = len(line.encode()) + 1
        if size + encoded > max_bytes:
            if not kept:  # nothing fits whole: the end of the last line
                tail = line.encode()[-(max_bytes - 1) :] if max_bytes > 1 else b""
                kept.append(tail.decode(errors="ignore"))
            break
        kept.append(line)
        size += encoded
    return "".join(f"{line}\n" for line in reversed(kept))
