"""Structured JSON logs on stdout, as Cloud Logging reads them from Cloud Run; shared by every
entry point.

Cloud Logging lifts `severity`, `message`, `time`, `logging.googleapis.com/sourceLocation` and
`logging.googleapis.com/trace` out of each JSON line; every other key (e.g. `job_id`) lands in
`jsonPayload`, where it can be filtered on. A traceback is appended to `message` so Error
Reporting picks it up.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else passed with `extra=` becomes a JSON field.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_SEVERITY = {
    "DEBUG": "DEBUG",
    "INFO": "INFO",
    "WARNING": "WARNING",
    "ERROR": "ERROR",
    "CRITICAL": "CRITICAL",
}
_HANDLER_NAME = "comfyburst-json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with Cloud Logging's special fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        entry: dict[str, Any] = {
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
            "logging.googleapis.com/sourceLocation": {
                "file": record.pathname,
                "line": str(record.lineno),
                "function": record.funcName,
            },
        }
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(level: int = logging.INFO) -> None:
    """Send the root logger's records to stdout as JSON; calling it again changes nothing."""
    root = logging.getLogger()
    if any(h.get_name() == _HANDLER_NAME for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)


def trace_field(project_id: str, header: str | None) -> dict[str, str]:
    """The `logging.googleapis.com/trace` field from an `X-Cloud-Trace-Context` header."""
    if not header:
        return {}
    trace_id = header.split("/", 1)[0].strip()
    if not trace_id:
        return {}
    return {"logging.googleapis.com/trace": f"projects/{project_id}/traces/{trace_id}"}
