"""A local cloud for runs that drive the whole system (demo, chaos, pool bench, e2e tests).

`running_cloud(...)` starts a `LocalCloud` whose VMs run `localcloud.vm_guest` (worker agent +
ComfyUI stand-in, or the real ComfyUI at COMFYUI_URL), with VM disks under its own state dir,
ComfyUI stand-in faults armed on every VM, and tuned timeouts; it stops everything on exit,
also on Ctrl-C or an error. `Observer` reads what the run produced: job documents, result
messages, VM billing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from localcloud.cloud import LocalCloud
from localcloud.config import RESULTS_SUBSCRIPTION, LocalCloudConfig
from localcloud.publish_faults import ENV_VAR as PUBLISH_FAULTS_ENV

# Short thresholds so faults are noticed in seconds, not minutes (values in seconds).
FAST_SETTINGS = {
    "COMFYBURST_BOOT_TIMEOUT_S": "45",
    "COMFYBURST_HEARTBEAT_TIMEOUT_S": "15",
    "COMFYBURST_HEARTBEAT_INTERVAL_S": "1",
    "COMFYBURST_LEASE_TTL_S": "120",
    # Longer than the done-flag trigger's worst latency on a loaded machine: a worker that powers
    # off before its flag is processed gets its job requeued (see the chaos report).
    "COMFYBURST_DRAIN_GRACE_S": "20",
    "COMFYBURST_STOCKOUT_COOLDOWN_S": "10",
}


def guest_argv() -> list[str]:
    """What a local VM runs: the guest (stand-in or real ComfyUI, then the worker agent)."""
    return [sys.executable, "-m", "localcloud.vm_guest"]


def disk_root(state_dir: Path) -> Path:
    """Where this cloud's VMs keep their boot disks."""
    return state_dir / "disks"


def arm_standin_faults(state_dir: Path, vm_names: list[str], faults: Mapping[str, Any]) -> None:
    """The ComfyUI stand-in fault set each VM boots with (see comfyui_standin/faults.py)."""
    for name in vm_names:
        disk = disk_root(state_dir) / name
        disk.mkdir(parents=True, exist_ok=True)
        (disk / "standin_faults.json").write_text(json.dumps(dict(faults)))


def vm_names(config: LocalCloudConfig) -> list[str]:
    """The pool's instance names, as LocalCloud creates them."""
    return [f"comfyburst-gpu-{i}" for i in range(config.pool_size)]


def cloud_config(
    state_dir: Path,
    *,
    pool_size: int = 2,
    reaper_period_s: float = 2.0,
    settings_env: Mapping[str, str] | None = None,
    zones: tuple[str, ...] = ("us-central1-a", "us-central1-b"),
    staging_s: float = 1.0,
) -> LocalCloudConfig:
    """An ephemeral-port local cloud with vm_guest VMs and a publish-fault file."""
    state_dir = state_dir.resolve()
    env = {**FAST_SETTINGS, **dict(settings_env or {})}
    env[PUBLISH_FAULTS_ENV] = str(state_dir / "publish_faults")
    base = LocalCloudConfig.ephemeral(state_dir)
    return replace(
        base,
        pool_size=pool_size,
        zones=zones,
        reaper_period_s=reaper_period_s,
        guest_argv=guest_argv(),
        guest_env={"LOCALCLOUD_VM_DISK_ROOT": str(disk_root(state_dir))},
        settings_env=env,
        compute_staging_s=staging_s,
    )


@contextmanager
def running_cloud(
    config: LocalCloudConfig, standin_faults: Mapping[str, Any] | None = None
) -> Iterator[LocalCloud]:
    """Start the cloud, export its env into this process, stop it (and restore env) on exit."""
    if standin_faults:
        arm_standin_faults(config.state_dir, vm_names(config), standin_faults)
    cloud = LocalCloud(config)
    saved = dict(os.environ)
    try:
        cloud.start()
        os.environ.update(cloud.env)
        warm_up(cloud.env)
        yield cloud
    finally:
        leftovers = cloud.stop()
        os.environ.clear()
        os.environ.update(saved)
        if leftovers:
            print(f"local cloud: still running after stop: {leftovers}", file=sys.stderr)


def warm_up(env: Mapping[str, str]) -> None:
    """Build each function's clients now (they are built on first use), so the first job's
    timings and the first done flag do not pay for a cold start."""
    api = env.get("COMFYBURST_API_URL")
    if api:
        requests.get(f"{api}/jobs/warm-up-0000", timeout=120)
    trigger = env.get("COMFYBURST_ON_DONE_FLAG_URL")
    if trigger:
        headers = {
            "ce-specversion": "1.0",
            "ce-id": "warm-up",
            "ce-source": "//storage.googleapis.com/projects/_/buckets/warm-up",
            "ce-type": "google.cloud.storage.object.v1.finalized",
            "ce-subject": "objects/warm-up",
            "Content-Type": "application/json",
        }
        body = {"bucket": "warm-up", "name": "warm-up"}
        requests.post(trigger, json=body, headers=headers, timeout=120)


class Observer:
    """Reads a running local cloud: VMs, job documents, result messages."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.compute = self.env["COMFYBURST_COMPUTE_ENDPOINT"]
        self.project = self.env["COMFYBURST_PROJECT_ID"]
        self._session = requests.Session()
        self._firestore: Any = None
        self._subscriber: Any = None

    # --- Compute stand-in ----------------------------------------------------------------

    def instances(self) -> list[dict[str, Any]]:
        """Each VM's stand-in record (status, pid, running_seconds, log path…)."""
        response = self._session.get(f"{self.compute}/_standin/instances", timeout=30)
        response.raise_for_status()
        instances: list[dict[str, Any]] = response.json()["instances"]
        return instances

    def billed_seconds(self) -> dict[str, float]:
        """RUNNING seconds per VM so far (what GCE would bill for the GPU)."""
        # A stand-in without billing accounting reports nothing (not zero).
        return {
            vm["name"]: float(vm["running_seconds"])
            for vm in self.instances()
            if "running_seconds" in vm
        }

    def wait_all_terminated(self, timeout_s: float) -> list[str]:
        """Poll until no VM is up; the names still up when time ran out."""
        deadline = time.monotonic() + timeout_s
        while True:
            up = [vm["name"] for vm in self.instances() if vm["status"] != "TERMINATED"]
            if not up or time.monotonic() > deadline:
                return up
            time.sleep(0.5)

    # --- Firestore -----------------------------------------------------------------------

    def _db(self) -> Any:
        if self._firestore is None:
            from google.cloud import firestore

            self._firestore = firestore.Client(project=self.project)
        return self._firestore

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every job document, raw (includes `vm`, `worker_timings`, timestamps)."""
        return {doc.id: doc.to_dict() for doc in self._db().collection("jobs").stream()}

    # --- results topic -------------------------------------------------------------------

    def pull_results(self, idle_s: float = 2.0, max_s: float = 60.0) -> list[dict[str, Any]]:
        """Pull (and ack) every message on the results subscription until it stays empty."""
        from google.api_core import exceptions as gexc
        from google.cloud.pubsub_v1 import SubscriberClient

        if self._subscriber is None:
            self._subscriber = SubscriberClient()
        path = f"projects/{self.project}/subscriptions/{RESULTS_SUBSCRIPTION}"
        messages: list[dict[str, Any]] = []
        quiet_since = time.monotonic()
        deadline = time.monotonic() + max_s
        while time.monotonic() - quiet_since < idle_s and time.monotonic() < deadline:
            try:
                response = self._subscriber.pull(
                    request={"subscription": path, "max_messages": 500}, timeout=5
                )
            except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
                continue
            if not response.received_messages:
                time.sleep(0.1)
                continue
            quiet_since = time.monotonic()
            for received in response.received_messages:
                messages.append(
                    {
                        "data": received.message.data,
                        "attributes": dict(received.message.attributes),
                        "message_id": received.message.message_id,
                    }
                )
            ack_ids = [r.ack_id for r in response.received_messages]
            self._subscriber.acknowledge(request={"subscription": path, "ack_ids": ack_ids})
        return messages

    def close(self) -> None:
        """Close the clients this observer opened."""
        if self._subscriber is not None:
            self._subscriber.close()
            self._subscriber = None
        self._session.close()
