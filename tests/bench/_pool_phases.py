"""Where a pool run's time went: per-job phases from the job documents, VM boots, agent crashes
and reaper actions from the local cloud's logs (the state dir outlives the run).

Phases (medians and 90th percentiles over the jobs that have them, seconds):
- queued→dispatched: `created_at` → `dispatched_at` (a start was requested for the job);
- queued→claimed by a draining VM: `created_at` → `started_at` for jobs without a start;
- dispatched→claimed: `dispatched_at` → `started_at` (the VM's boot, guest and agent start);
- claim→done: `started_at` → `finished_at` (run, upload, done flag, trigger);
- hand-over: on one VM, end of a job's busy interval → the next job's claim, when under
  `HANDOVER_MAX_S` (a larger gap means the VM went down in between).
"""

from __future__ import annotations

import itertools
import json
import re
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

HANDOVER_MAX_S = 60.0
_BOOT_LINE = re.compile(r"^--- localcloud compute: boot (\S+?):? ")
_AGENT_LINE = re.compile(r"^(\S+ \S+) INFO comfyburst_worker: agent on ")
_REAPER_ACTION = re.compile(r"reaper (RequeueJob|FailJob|TimeOutJob|CancelJob|StopVm)\b[^:]*: (.*)")
_EXIT_LINE = re.compile(r"^agent exited with (-?\d+)")
_HEX = re.compile(r"[0-9a-f]{32}")


def _ts(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    return datetime.fromisoformat(str(value)).timestamp()


def _summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {
        "n": len(values),
        "median": round(statistics.median(values), 2),
        "p90": round(p90, 2),
        "max": round(ordered[-1], 2),
    }


def job_phases(
    jobs: dict[str, dict[str, Any]], busy: dict[str, list[tuple[float, float, str]]]
) -> dict[str, Any]:
    """Phase durations (see the module docstring) from job documents and busy intervals."""
    dispatched, drained, boot, run = [], [], [], []
    for doc in jobs.values():
        created, disp = _ts(doc.get("created_at")), _ts(doc.get("dispatched_at"))
        started, finished = _ts(doc.get("started_at")), _ts(doc.get("finished_at"))
        if created is not None and disp is not None:
            dispatched.append(disp - created)
        if disp is not None and started is not None:
            boot.append(started - disp)
        elif created is not None and started is not None:
            drained.append(started - created)
        if started is not None and finished is not None:
            run.append(finished - started)
    handover = []
    for spans in busy.values():
        for (_, end_a, _), (start_b, _, _) in itertools.pairwise(spans):
            if start_b - end_a < HANDOVER_MAX_S:
                handover.append(start_b - end_a)
    attempts = [int(doc.get("attempt") or 1) for doc in jobs.values()]
    return {
        "queued→dispatched": _summary(dispatched),
        "queued→claimed by a draining VM": _summary(drained),
        "dispatched→claimed (boot)": _summary(boot),
        "claim→done": _summary(run),
        "done→next claim, same VM": _summary(handover),
        "jobs started by a VM start": len(boot),
        "jobs taken by a running VM": len(drained),
        "requeues": sum(a - 1 for a in attempts),
    }


def log_findings(state_dir: Path) -> dict[str, Any]:
    """VM boots, guest boot (boot → agent up), agent crashes (non-zero exits), reaper reasons."""
    boots, guest_boot, crashes = 0, [], Counter()
    for log in sorted((state_dir / "compute" / "logs").glob("*.log")):
        booted_at: float | None = None
        last_error = ""
        lines = log.read_text(errors="replace").splitlines()
        for i, line in enumerate(lines):
            if m := _BOOT_LINE.match(line):
                boots += 1
                booted_at = _ts(m.group(1))
            elif (m := _AGENT_LINE.match(line)) and booted_at is not None:
                up = datetime.fromisoformat(m.group(1).replace(",", ".")).astimezone()
                guest_boot.append(up.timestamp() - booted_at)
                booted_at = None
            elif line.startswith("Traceback"):
                last_error = next((x for x in lines[i + 1 :] if not x.startswith((" ", "\t"))), "")
            elif (m := _EXIT_LINE.match(line)) and m.group(1) != "0":
                crashes[last_error[:120] or f"exit {m.group(1)}"] += 1
                last_error = ""
    reasons: Counter[str] = Counter()
    reaper_log = state_dir / "logs" / "fn-reaper.log"
    if reaper_log.exists():
        for line in reaper_log.read_text(errors="replace").splitlines():
            try:
                message = json.loads(line).get("message", "")
            except ValueError:
                continue
            if m := _REAPER_ACTION.search(message):
                reason = re.sub(r"\d+ s\b", "N s", _HEX.sub("…", m.group(2)))
                reasons[f"{m.group(1)}: {reason}"[:140]] += 1
    return {
        "vm_boots": boots,
        "guest boot (boot → agent up)": _summary(guest_boot),
        "agent crashes (last error)": dict(crashes),
        "reaper actions": dict(reasons.most_common(12)),
    }
