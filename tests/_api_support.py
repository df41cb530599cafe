"""Builders for the API and dispatch tests: settings, request bodies, and the functions-framework
app of `functions/main.py` wired to in-memory fakes."""

from __future__ import annotations

import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyburst.api import ApiDeps, build_api_deps
from comfyburst.preflight import Catalogue
from comfyburst.settings import FunctionSettings
from tests.fakes import (
    FakeFleet,
    FakeSigner,
    FixedClock,
    InMemoryBlobStore,
    InMemoryJobStore,
    InMemoryPublisher,
)

MAIN_SOURCE = Path(__file__).resolve().parent.parent / "functions" / "main.py"

WORKFLOW: dict[str, Any] = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0},
    },
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cb"}},
}
PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


def make_settings(**overrides: Any) -> FunctionSettings:
    """FunctionSettings from these values only (never the environment)."""
    values: dict[str, Any] = {
        "project_id": "p-test",
        "jobs_bucket": "jobs-b",
        "outputs_bucket": "outputs-b",
        "signals_bucket": "signals-b",
        "results_topic": "results",
        "pool_zones": ["zone-a", "zone-b"],
        "gs_model_buckets": ["models-b"],
        "http_model_hosts": ["127.0.0.1:8765"],
        **overrides,
    }
    return FunctionSettings.model_validate(values)


def body(**overrides: Any) -> dict[str, Any]:
    """A valid job request body."""
    return {"workflow": json.loads(json.dumps(WORKFLOW)), **overrides}


def ckpt_body(url: str = "https://civitai.com/api/download/models/1") -> dict[str, Any]:
    """A request that brings a checkpoint and loads it."""
    workflow = json.loads(json.dumps(WORKFLOW))
    workflow["3"] = {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "my.safetensors"},
    }
    workflow["4"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["3", 2]}}
    workflow["5"] = {"class_type": "VAEDecode", "inputs": {"samples": ["4", 0], "vae": ["3", 2]}}
    workflow["6"] = {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}}
    return {
        "workflow": workflow,
        "models": [{"kind": "checkpoints", "filename": "my.safetensors", "url": url}],
    }


@dataclass
class FakeEnv:
    """The app of functions/main.py on fakes, and the fakes to look into."""

    settings: FunctionSettings
    store: InMemoryJobStore
    blobs: InMemoryBlobStore
    fleet: FakeFleet
    publisher: InMemoryPublisher
    clock: FixedClock
    deps: ApiDeps
    client: Any

    def nothing_written(self) -> bool:
        return not self.store.jobs and not self.store.idempotency and not self.blobs.objects

    def submit(self, request: Any, **headers: str) -> Any:
        data = request if isinstance(request, bytes | str) else json.dumps(request)
        return self.client.post(
            "/jobs", data=data, headers=headers, content_type="application/json"
        )


def fake_env(vms: list[tuple[str, str]] | None = None, **settings: Any) -> FakeEnv:
    """A fresh app with fresh fakes."""
    import functions_framework

    config = make_settings(**settings)
    store, blobs = InMemoryJobStore(), InMemoryBlobStore()
    fleet = FakeFleet(vms if vms is not None else [("gpu-a1", "zone-a"), ("gpu-b1", "zone-b")])
    publisher, clock = InMemoryPublisher(), FixedClock()
    deps = build_api_deps(
        config,
        store=store,
        blobs=blobs,
        signer=FakeSigner(),
        publisher=publisher,
        fleet=fleet,
        clock=clock,
        catalogue=Catalogue.load_default,
    )
    app = functions_framework.create_app(target="api", source=str(MAIN_SOURCE))
    sys.modules["main"].api_deps.set(deps)
    return FakeEnv(config, store, blobs, fleet, publisher, clock, deps, app.test_client())
