"""The local cloud's functions source: `functions/main.py`, with the local cloud's own parts
injected from the outside (the deployed package never imports `localcloud`).

functions-framework loads this file (`--source`); it registers the chaos run's publish-fault
wrapper with `comfyburst.wiring` when `COMFYBURST_LOCAL_PUBLISH_FAULTS` names a file, then
exposes every entry point of `functions/main.py` under its own name.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from comfyburst.wiring import wrap_publishers
from localcloud.config import FUNCTIONS_DIR
from localcloud.publish_faults import ENV_VAR, FaultyPublisher

_faults_file: str = os.environ.get(ENV_VAR) or ""
if _faults_file:
    wrap_publishers(lambda real: FaultyPublisher(real, _faults_file))

_spec = importlib.util.spec_from_file_location("main", FUNCTIONS_DIR / "main.py")
assert _spec is not None and _spec.loader is not None
_main = importlib.util.module_from_spec(_spec)
sys.modules["main"] = _main
_spec.loader.exec_module(_main)
globals().update({k: v for k, v in vars(_main).items() if not k.startswith("_")})
