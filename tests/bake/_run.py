"""Phase 2 of the bake rehearsal, inside its own network namespace: catalogue export, the user
split, one job through the baked units."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.bake import _root
from tests.bake._as_user import as_user
from tests.bake._forward import METADATA_IP, Forwarder
from tests.bake._root import WORKFLOW, RehearsalFailed, work_dir

STATE = "run/comfyburst-rehearsal"
AS_BUILD = ["sudo", "-n", "-u", "comfyburst-build", "--"]  # the image's env_build_as
TOKEN_URL = (
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
)


def prove_user_split(root: Path) -> list[str]:
    """Each check as (user, what, must succeed); returns the failures, prints every result."""
    token = [
        "curl",
        "--silent",
        "--show-error",
        "--max-time",
        "5",
        "--header",
        "Metadata-Flavor: Google",
        TOKEN_URL,
    ]
    checks: list[tuple[str, str, list[str], bool]] = [
        ("comfyburst", "token endpoint", token, True),
        ("comfyui", "token endpoint", token, False),
        # An environment build's pack code: the worker runs it as the build user through sudo.
        ("comfyburst", "token endpoint as build", [*AS_BUILD, *token], False),
        ("comfyburst-build", "token endpoint", token, False),
        ("comfyburst", "worker home", ["ls", "/var/lib/comfyburst"], True),
        ("comfyui", "worker home", ["ls", "/var/lib/comfyburst"], False),
        ("comfyburst", "worker venv", ["cat", "/opt/comfyburst/venv/pyvenv.cfg"], True),
        ("comfyui", "worker venv", ["cat", "/opt/comfyburst/venv/pyvenv.cfg"], False),
        (
            "comfyburst",
            "write ComfyUI input",
            ["sh", "-c", "umask 0027; echo probe > /opt/comfyui/input/probe.txt"],
            True,
        ),
        ("comfyui", "read worker's input", ["cat", "/opt/comfyui/input/probe.txt"], True),
        (
            "comfyui",
            "write the model store",
            ["touch", "/var/lib/comfyburst-models/store/planted"],
            False,
        ),
        ("comfyui", "write ComfyUI's code", ["touch", "/opt/comfyui/main.py"], False),
    ]
    failures = []
    for user, what, cmd, must in checks:
        result = as_user(root, user, *cmd)
        ok = result.returncode == 0
        if ok and what.startswith("token endpoint"):
            ok = "access_token" in result.stdout
        verdict = "reachable" if ok else "refused"
        good = ok == must
        detail = "" if ok else f" ({(result.stderr or result.stdout).strip()[:90]})"
        print(
            f"  user split: {user:<10} {what:<22} {verdict}{detail} -> {'ok' if good else 'WRONG'}",
            flush=True,
        )
        if not good:
            failures.append(f"{user}: {what} {verdict}")
    as_user(root, "comfyburst", "rm", "-f", "/opt/comfyui/input/probe.txt")
    return failures


def _build_vm_metadata(cloud_env: dict[str, str]) -> tuple[Any, Forwarder]:
    """A metadata server for the image-build VM, answering at 169.254.169.254:80."""
    from localcloud.compute._metadata_server import MetadataServer, instance_tree

    tree = instance_tree(
        project=cloud_env["COMFYBURST_PROJECT_ID"],
        project_number=1,
        name="comfyburst-image-build",
        zone="us-central1-a",
        instance_id=1,
        machine_type="n1-standard-8",
        attributes={},
        sa_email="imager@rehearsal.iam.gserviceaccount.com",
    )
    metadata = MetadataServer(lambda: tree, threading.Condition())
    return metadata, Forwarder(metadata.address)


def _check_user_split(root: Path, cloud_env: dict[str, str]) -> None:
    metadata, forwarder = _build_vm_metadata(cloud_env)
    try:
        failures = prove_user_split(root)
    finally:
        forwarder.close()
        metadata.close()
    if failures:
        raise RehearsalFailed(f"user split: {failures}")


def _export_catalogue(root: Path, env: dict[str, str], cloud_env: dict[str, str]) -> None:
    metadata, forwarder = _build_vm_metadata(cloud_env)
    try:
        step = {
            **env,
            "JOBS_BUCKET": cloud_env["COMFYBURST_JOBS_BUCKET"],
            "STORAGE_API_URL": cloud_env["STORAGE_EMULATOR_HOST"],
        }
        log = work_dir() / "provision.log"
        # The cleanup at its end removes the sources; keep a copy for a rerun of phase 2.
        code = _root.run_script(
            root, f"{_root.SRC_IN_ROOT}/scripts/07-export-catalogue.sh", step, log
        )
        if code != 0:
            raise RehearsalFailed(f"07-export-catalogue.sh exited with {code}")
    finally:
        forwarder.close()
        metadata.close()
    from google.cloud import storage

    from comfyburst.adapters.gcs import GcsBlobStore
    from comfyburst.api._deps import _CatalogueReader  # the reader the API's pre-flight uses
    from comfyburst.preflight.catalogue_store import CatalogueStore

    store = CatalogueStore(
        _CatalogueReader(GcsBlobStore(storage.Client(project=cloud_env["COMFYBURST_PROJECT_ID"]))),
        cloud_env["COMFYBURST_JOBS_BUCKET"],
    )
    catalogue = store.get(time.monotonic())
    if store.generation is None:
        raise RehearsalFailed("the pre-flight did not load the exported catalogue")
    print(
        f"=== catalogue: pre-flight loaded generation {store.generation} "
        f"({len(catalogue)} node classes)",
        flush=True,
    )


def _unit_users(root: Path) -> dict[str, str]:
    """Which user each running unit's process runs as (from /proc)."""
    users = {
        int(line.split(":")[2]): line.split(":")[0]
        for line in (root / "etc/passwd").read_text().splitlines()
    }
    seen = {}
    for pid_file in (root / STATE).glob("*.service.pid"):
        try:
            status = Path(f"/proc/{pid_file.read_text().strip()}/status").read_text()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        seen[pid_file.name.removesuffix(".pid")] = users.get(uid, str(uid))
    return seen


def _run_job(root: Path, cloud_env: dict[str, str]) -> None:
    from comfyburst.client import ApiClient, ClientSettings
    from localcloud.scenarios.harness import Observer

    client = ApiClient(ClientSettings(api_url=cloud_env["COMFYBURST_API_URL"], auth="none"))
    (root / STATE / "poweroff.json").unlink(missing_ok=True)
    job = client.submit(
        {"workflow": json.loads(WORKFLOW.read_text()), "options": {"timeout_s": 600}}
    )
    print(f"=== job {job['job_id']} submitted", flush=True)
    users: dict[str, str] = {}
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        users.update(_unit_users(root))
        serial = "\n".join(
            p.read_text(errors="replace")
            for p in (work_dir() / "cloud" / "compute" / "logs").glob("*.log")
        )
        if "boot: halted" in serial:  # the boot ended without a power-off
            raise RehearsalFailed(
                f"a unit of the booted root failed; the VM's console:\n{serial[-1500:]}"
            )
        status = client.get(job["job_id"])
        if status["state"] in ("succeeded", "failed", "cancelled", "timed_out"):
            break
        time.sleep(1)
    done: dict[str, Any] = client.wait(job["job_id"], poll_s=1, timeout_s=60)
    print(f"=== units ran as: {users}", flush=True)
    if done["state"] != "succeeded":
        raise RehearsalFailed(
            f"job ended {done['state']}: {done.get('error')}; see {root / STATE}/*.log"
        )
    if (
        users.get("comfyui.service") != "comfyui"
        or users.get("comfyburst-worker.service") != "comfyburst"
    ):
        raise RehearsalFailed(f"units did not run as the users they name: {users}")
    data = client.fetch(done["outputs"][0]["signed_url"])
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise RehearsalFailed("the output is not a PNG")
    from google.cloud import storage

    flag = (
        storage.Client(project=cloud_env["COMFYBURST_PROJECT_ID"])
        .bucket(cloud_env["COMFYBURST_SIGNALS_BUCKET"])
        .get_blob(f"jobs/{job['job_id']}/done.json")
    )
    if flag is None:
        raise RehearsalFailed("no done flag in the signals bucket")
    print(
        f"=== job succeeded: {[o['name'] for o in done['outputs']]}, done flag {flag.name}",
        flush=True,
    )
    observer = Observer(cloud_env)
    try:
        up = observer.wait_all_terminated(timeout_s=120)
    finally:
        observer.close()
    poweroff = root / STATE / "poweroff.json"
    if up or not poweroff.exists():
        raise RehearsalFailed(
            f"the guest did not power off (up: {up}, record: {poweroff.exists()})"
        )
    print(f"=== powered off: {poweroff.read_text()}", flush=True)


def run_phase(root: Path, env: dict[str, str]) -> int:
    from localcloud.scenarios.harness import cloud_config, running_cloud

    _root.run(["ip", "link", "set", "lo", "up"])
    _root.run(["ip", "addr", "add", f"{METADATA_IP}/32", "dev", "lo"])
    state_dir = work_dir() / "cloud"
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    config = cloud_config(state_dir, pool_size=1, zones=("us-central1-a",))
    guest = [sys.executable, "-m", "tests.bake.guest", "--root", str(root)]
    config = replace(config, guest_argv=guest, guest_env={})
    try:
        with running_cloud(config) as cloud:
            cloud_env = dict(cloud.env)
            _export_catalogue(root, env, cloud_env)
            _run_job(root, cloud_env)
            _check_user_split(root, cloud_env)
            from tests.bake._env_build import prove_environment_build
            from tests.bake._layers import prove_layer_rights

            prove_layer_rights(root)
            prove_environment_build(root)
    except RehearsalFailed as exc:
        print(f"BAKE REHEARSAL FAILED: {exc}", flush=True)
        for log in sorted((root / STATE).glob("*.log")):
            print(
                f"--- {log.name} (last lines)\n"
                + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            )
        return 1
    return 0
