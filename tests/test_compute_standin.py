"""The Compute Engine stand-in, driven through google-cloud-compute as the functions use it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.api_core import exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import compute_v1

from localcloud.compute import ComputeStandin, ComputeStandinConfig, GuestSpec, InstanceSpec
from tests._poll import poll_until

pytestmark = pytest.mark.emulator

PROJECT = "standin-test"
ZONE_A = "us-central1-a"
ZONE_B = "us-central1-b"
DEADLINE_S = 10.0

# The guest: read the job attribute over plain HTTP and through google-auth, report, then idle
# until killed (or exit with the code in the `exit_code` attribute, like a worker halting).
GUEST_SCRIPT = """
import json, os, sys, time, urllib.request
host = os.environ["GCE_METADATA_HOST"]

def md(path):
    req = urllib.request.Request(
        f"http://{host}/computeMetadata/v1/{path}", headers={"Metadata-Flavor": "Google"}
    )
    try:
        return urllib.request.urlopen(req, timeout=5).read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code

import google.auth
from google.auth.compute_engine import _metadata
from google.auth.transport.requests import Request

creds, project = google.auth.default()
creds.refresh(Request())
try:
    auth_job = _metadata.get(Request(), "instance/attributes/job")
except Exception as exc:  # a VM without the attribute must keep running
    auth_job = repr(exc)
report = {
    "name": md("instance/name"),
    "job": md("instance/attributes/job"),
    "missing": md("instance/attributes/absent"),
    "auth_job": auth_job,
    "auth_project": project,
    "token": creds.token,
}
out = os.path.join(os.environ["OUT_DIR"], report["name"] + ".json")
with open(out + ".tmp", "w") as fh:
    json.dump(report, fh)
os.replace(out + ".tmp", out)
code = md("instance/attributes/exit_code")
if isinstance(code, str):
    sys.exit(int(code))
while True:
    time.sleep(60)
"""


@pytest.fixture(autouse=True)
def _wipe_localcloud() -> None:
    """Override conftest's wipe: each test here starts its own stand-in, not the shared cloud."""


@dataclass
class Cloud:
    """One stand-in and the clients pointed at it."""

    standin: ComputeStandin
    instances: compute_v1.InstancesClient
    operations: compute_v1.ZoneOperationsClient
    out_dir: Path

    def get(self, name: str, zone: str = ZONE_A) -> compute_v1.Instance:
        return self.instances.get(project=PROJECT, zone=zone, instance=name)

    def wait_op(self, op: Any, zone: str = ZONE_A) -> compute_v1.Operation:
        # Not op.result(): its poller ignores api_endpoint and calls the real API.
        return self.operations.wait(project=PROJECT, zone=zone, operation=op.name)

    def set_metadata(
        self, name: str, items: dict[str, str], *, fingerprint: str | None = None, **kw: Any
    ) -> Any:
        if fingerprint is None:
            fingerprint = self.get(name).metadata.fingerprint
        resource = compute_v1.Metadata(
            fingerprint=fingerprint,
            items=[compute_v1.Items(key=k, value=v) for k, v in items.items()],
        )
        return self.instances.set_metadata(
            request=compute_v1.SetMetadataInstanceRequest(
                project=PROJECT, zone=ZONE_A, instance=name, metadata_resource=resource, **kw
            )
        )

    def start(self, name: str, **kw: Any) -> Any:
        return self.instances.start(
            request=compute_v1.StartInstanceRequest(
                project=PROJECT, zone=ZONE_A, instance=name, **kw
            )
        )

    def stop(self, name: str) -> Any:
        return self.instances.stop(project=PROJECT, zone=ZONE_A, instance=name)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.standin.base_url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def metadata_get(host: str, path: str, flavor: bool = True) -> tuple[int, str, dict[str, str]]:
    headers = {"Metadata-Flavor": "Google"} if flavor else {}
    req = urllib.request.Request(f"http://{host}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=DEADLINE_S) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


@pytest.fixture
def make_cloud(tmp_path: Path) -> Iterator[Callable[..., Cloud]]:
    started: list[ComputeStandin] = []

    def make(**overrides: Any) -> Cloud:
        script = tmp_path / "guest.py"
        script.write_text(GUEST_SCRIPT)
        out_dir = tmp_path / "out"
        out_dir.mkdir(exist_ok=True)
        settings: dict[str, Any] = {
            "project": PROJECT,
            "project_number": 42,
            "instances": [
                InstanceSpec(name="vm-a", zone=ZONE_A, labels={"pool": "gpu"}),
                InstanceSpec(name="vm-b", zone=ZONE_A, labels={"pool": "other"}),
                InstanceSpec(name="vm-c", zone=ZONE_B, labels={"pool": "gpu"}),
            ],
            "staging_s": 0.05,
            "stopping_s": 0.05,
            "stop_grace_s": 3.0,
            # CLOUDSDK_CONFIG: keep a developer's gcloud ADC file from shadowing the VM's account.
            "guest": GuestSpec(
                argv=[sys.executable, str(script)],
                env={"OUT_DIR": str(out_dir), "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")},
            ),
            "log_dir": tmp_path / "logs",
        }
        settings.update(overrides)
        standin = ComputeStandin(ComputeStandinConfig(**settings))
        started.append(standin)
        options = ClientOptions(api_endpoint=standin.start())
        creds = AnonymousCredentials()
        return Cloud(
            standin,
            compute_v1.InstancesClient(credentials=creds, client_options=options),
            compute_v1.ZoneOperationsClient(credentials=creds, client_options=options),
            out_dir,
        )

    yield make
    for standin in started:
        standin.stop()


def boot(cloud: Cloud, name: str, items: dict[str, str]) -> dict[str, Any]:
    """Set metadata, start, wait for the guest's report; return the stand-in's VM state."""
    cloud.set_metadata(name, items)
    op = cloud.wait_op(cloud.start(name))
    assert compute_v1.Operation.Status(op.status).name == "DONE"
    assert not op.error.errors
    return cloud.standin.instance(name)


def test_start_runs_the_guest_with_its_metadata_server(
    make_cloud: Callable[..., Cloud], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The host's project must not leak into the guest: a real VM learns it from metadata.
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "host-project")
    cloud = make_cloud()
    assert cloud.get("vm-a").status == "TERMINATED"
    state = boot(cloud, "vm-a", {"job": "job-1"})

    instance = cloud.get("vm-a")
    assert instance.status == "RUNNING"
    assert instance.scheduling.on_host_maintenance == "TERMINATE"
    assert instance.last_start_timestamp
    assert pid_alive(state["pid"])
    report = json.loads(
        poll_until(lambda: _read(cloud.out_dir / "vm-a.json"), "guest report", timeout_s=DEADLINE_S)
    )
    assert report["name"] == "vm-a"
    assert report["job"] == "job-1"
    assert report["missing"] == 404
    assert report["auth_job"] == "job-1"
    assert report["auth_project"] == PROJECT
    assert report["token"].startswith("ya29.")

    host = state["metadata_host"]
    assert metadata_get(host, "/computeMetadata/v1/instance/name", flavor=False)[0] == 403
    status, body, headers = metadata_get(host, "/computeMetadata/v1/instance/zone")
    assert (status, body, headers["Metadata-Flavor"]) == (
        200,
        f"projects/42/zones/{ZONE_A}",
        "Google",
    )
    status, body, _ = metadata_get(host, "/computeMetadata/v1/instance/?recursive=true")
    assert json.loads(body)["attributes"] == {"job": "job-1"}
    status, body, _ = metadata_get(
        host, "/computeMetadata/v1/instance/service-accounts/default/identity?audience=https://x"
    )
    assert status == 200 and body.count(".") == 2


def test_stop_ends_the_guest(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    pid = boot(cloud, "vm-a", {"job": "job-1"})["pid"]
    poll_until(lambda: _read(cloud.out_dir / "vm-a.json"), "guest report", timeout_s=DEADLINE_S)

    op = cloud.wait_op(cloud.stop("vm-a"))

    assert compute_v1.Operation.Status(op.status).name == "DONE"
    instance = cloud.get("vm-a")
    assert instance.status == "TERMINATED"
    assert instance.last_stop_timestamp
    assert not pid_alive(pid)
    state = cloud.standin.instance("vm-a")
    assert state["pid"] is None and state["metadata_host"] is None
    assert state["guest_exit_code"] == -15  # SIGTERM


def test_guest_exiting_on_its_own_terminates_the_vm(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    boot(cloud, "vm-a", {"job": "job-1", "exit_code": "3"})

    poll_until(
        lambda: cloud.get("vm-a").status == "TERMINATED",
        "TERMINATED after guest exit",
        timeout_s=DEADLINE_S,
    )

    assert cloud.standin.instance("vm-a")["guest_exit_code"] == 3


def test_set_metadata_needs_the_current_fingerprint(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    first = cloud.get("vm-a").metadata.fingerprint
    cloud.set_metadata("vm-a", {"job": "job-1"}, fingerprint=first)
    second = cloud.get("vm-a").metadata.fingerprint
    assert second != first

    with pytest.raises(exceptions.PreconditionFailed):
        cloud.set_metadata("vm-a", {"job": "job-2"}, fingerprint=first)
    with pytest.raises(exceptions.PreconditionFailed):
        cloud.set_metadata("vm-a", {"job": "job-2"}, fingerprint="")
    assert {i.key: i.value for i in cloud.get("vm-a").metadata.items} == {"job": "job-1"}


def test_start_while_stopping_is_not_ready(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud(stopping_s=2.0)
    boot(cloud, "vm-a", {"job": "job-1"})
    cloud.stop("vm-a")
    assert cloud.get("vm-a").status == "STOPPING"

    with pytest.raises(exceptions.BadRequest) as caught:
        cloud.start("vm-a")

    assert caught.value.errors[0]["reason"] == "resourceNotReady"
    assert "projects/standin-test/zones/us-central1-a/instances/vm-a' is not ready" in str(
        caught.value
    )


def test_sync_stockout_reaches_the_caller(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    armed = cloud.admin("POST", "/_standin/faults", {"kind": "stockout", "zone": ZONE_A})
    assert armed["faults"][0]["kind"] == "stockout"

    with pytest.raises(exceptions.ServiceUnavailable) as caught:
        cloud.start("vm-a")

    assert caught.value.errors[0]["reason"] == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert caught.value.reason == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert cloud.get("vm-a").status == "TERMINATED"
    # count=1 is spent: the next start goes through.
    cloud.wait_op(cloud.start("vm-a"))
    assert cloud.get("vm-a").status == "RUNNING"


def test_quota_fault_is_forbidden(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    cloud.standin.add_fault({"kind": "quota", "instance": "vm-a", "count": "always"})

    for _ in range(2):
        with pytest.raises(exceptions.Forbidden) as caught:
            cloud.start("vm-a")
        assert caught.value.errors[0]["reason"] == "QUOTA_EXCEEDED"
    assert cloud.admin("DELETE", "/_standin/faults") == {"faults": []}
    cloud.wait_op(cloud.start("vm-a"))


def test_stockout_in_operation_mode_fails_the_operation(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    cloud.standin.add_fault({"kind": "stockout", "instance": "vm-a", "mode": "operation"})

    op = cloud.wait_op(cloud.start("vm-a"))

    assert compute_v1.Operation.Status(op.status).name == "DONE"
    assert op.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert op.http_error_status_code == 503
    fetched = cloud.operations.get(project=PROJECT, zone=ZONE_A, operation=op.name)
    assert fetched.error.errors[0].code == "ZONE_RESOURCE_POOL_EXHAUSTED"
    assert cloud.get("vm-a").status == "TERMINATED"
    assert cloud.standin.instance("vm-a")["pid"] is None


def test_boot_failure_runs_no_guest(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    cloud.standin.add_fault({"kind": "boot_failure", "instance": "vm-a"})

    state = boot(cloud, "vm-a", {"job": "job-1"})

    assert cloud.get("vm-a").status == "RUNNING"
    assert state["pid"] is None and state["boot_failure"] is True


def test_list_filters_by_label_and_status(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    cloud.wait_op(cloud.start("vm-b"))

    zonal = cloud.instances.list(
        request=compute_v1.ListInstancesRequest(
            project=PROJECT, zone=ZONE_A, filter='labels.pool = "gpu"'
        )
    )
    assert [i.name for i in zonal] == ["vm-a"]
    running = cloud.instances.list(
        request=compute_v1.ListInstancesRequest(
            project=PROJECT, zone=ZONE_A, filter="status = RUNNING"
        )
    )
    assert [i.name for i in running] == ["vm-b"]
    aggregated = cloud.instances.aggregated_list(
        request=compute_v1.AggregatedListInstancesRequest(
            project=PROJECT, filter="labels.pool=gpu AND status = TERMINATED"
        )
    )
    found = {zone: [i.name for i in scoped.instances] for zone, scoped in aggregated}
    assert found == {f"zones/{ZONE_A}": ["vm-a"], f"zones/{ZONE_B}": ["vm-c"]}
    with pytest.raises(exceptions.BadRequest):
        list(
            cloud.instances.list(
                request=compute_v1.ListInstancesRequest(
                    project=PROJECT, zone=ZONE_A, filter="labels.pool ="
                )
            )
        )


def test_request_id_makes_retries_idempotent(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    fingerprint = cloud.get("vm-a").metadata.fingerprint
    metadata_rid = str(uuid.uuid4())
    first = cloud.set_metadata(
        "vm-a", {"job": "job-1"}, fingerprint=fingerprint, request_id=metadata_rid
    )
    # The retry carries the now stale fingerprint: deduped, it must not answer 412.
    again = cloud.set_metadata(
        "vm-a", {"job": "job-1"}, fingerprint=fingerprint, request_id=metadata_rid
    )
    assert again.name == first.name

    start_rid = str(uuid.uuid4())
    op = cloud.start("vm-a", request_id=start_rid)
    assert cloud.start("vm-a", request_id=start_rid).name == op.name
    cloud.wait_op(op)
    poll_until(lambda: _read(cloud.out_dir / "vm-a.json"), "guest report", timeout_s=DEADLINE_S)
    boots = (Path(cloud.standin.instance("vm-a")["log_path"]).read_text()).count("boot ")
    assert boots == 1
    with pytest.raises(exceptions.BadRequest):
        cloud.start("vm-a", request_id="not-a-uuid")


def test_wait_for_change_wakes_on_set_metadata(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    host = boot(cloud, "vm-a", {"job": "job-1"})["metadata_host"]
    path = "/computeMetadata/v1/instance/attributes/job"
    status, body, headers = metadata_get(host, path)
    assert (status, body) == (200, "job-1")
    results: list[tuple[int, str, dict[str, str]]] = []
    poll = f"{path}?wait_for_change=true&last_etag={headers['ETag']}&timeout_sec=30"
    waiter = threading.Thread(target=lambda: results.append(metadata_get(host, poll)))
    waiter.start()

    cloud.set_metadata("vm-a", {"job": "job-2"})
    waiter.join(DEADLINE_S)

    assert results and results[0][:2] == (200, "job-2")
    assert results[0][2]["ETag"] != headers["ETag"]


def test_reset_and_admin_listing(make_cloud: Callable[..., Cloud]) -> None:
    cloud = make_cloud()
    pid = boot(cloud, "vm-a", {"job": "job-1"})["pid"]
    listed = {i["name"]: i for i in cloud.admin("GET", "/_standin/instances")["instances"]}
    assert listed["vm-a"]["status"] == "RUNNING" and listed["vm-a"]["pid"] == pid

    after = {i["name"]: i for i in cloud.admin("POST", "/_standin/reset")["instances"]}

    assert after["vm-a"]["status"] == "TERMINATED" and after["vm-a"]["metadata"] == {}
    assert not pid_alive(pid)
    assert not cloud.get("vm-a").metadata.items


def test_module_entry_point_prints_ready(tmp_path: Path) -> None:
    config = tmp_path / "compute.json"
    config.write_text(json.dumps({"project": PROJECT, "log_dir": str(tmp_path / "logs")}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "localcloud.compute", "--config", str(config), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        with urllib.request.urlopen(url + "/_standin/healthz", timeout=DEADLINE_S) as resp:
            assert json.loads(resp.read()) == {"ok": True}
    finally:
        proc.terminate()
        assert proc.wait(DEADLINE_S) == 0


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None
