"""Export the JSON Schemas of the public documents to checked-in files.

`python -m comfyburst.schema_export` rewrites them; a test fails when they are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from comfyburst.schema import DoneManifest, JobRequest, ResultMessage

SCHEMA_DIR = Path(__file__).parent / "schemas"
EXPORTED: dict[str, type[BaseModel]] = {
    "job_request.schema.json": JobRequest,
    "result_message.schema.json": ResultMessage,
    "done_manifest.schema.json": DoneManifest,
}


def render(model: type[BaseModel]) -> str:
    """The schema as stable, pretty JSON text."""
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def main() -> int:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for filename, model in EXPORTED.items():
        (SCHEMA_DIR / filename).write_text(render(model), encoding="utf-8")
        print(f"wrote {SCHEMA_DIR / filename}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
