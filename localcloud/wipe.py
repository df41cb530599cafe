"""Empty the local cloud between tests: Firestore documents, bucket objects, Compute VMs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import requests


def wipe_firestore(env: Mapping[str, str]) -> None:
    """Delete every document of the project's default database (emulator endpoint)."""
    host, project = env["FIRESTORE_EMULATOR_HOST"], env["COMFYBURST_PROJECT_ID"]
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    requests.delete(url, timeout=30).raise_for_status()


def wipe_buckets(env: Mapping[str, str], buckets: Iterable[str]) -> None:
    """Delete every object in the given buckets, keeping the buckets."""
    base = f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b"
    with requests.Session() as session:
        for bucket in buckets:
            page: str | None = ""
            while page is not None:
                params = {"pageToken": page} if page else {}
                listing = session.get(f"{base}/{bucket}/o", params=params, timeout=30)
                listing.raise_for_status()
                body = listing.json()
                for item in body.get("items", []):
                    name = requests.utils.quote(item["name"], safe="")
                    gone = session.delete(f"{base}/{bucket}/o/{name}", timeout=30)
                    if gone.status_code not in (200, 204, 404):
                        gone.raise_for_status()
                page = body.get("nextPageToken")


def reset_compute(env: Mapping[str, str]) -> None:
    """Power off every stand-in VM, clear metadata and faults."""
    endpoint = env.get("COMFYBURST_COMPUTE_ENDPOINT")
    if endpoint:
        requests.post(f"{endpoint}/_standin/reset", timeout=60).raise_for_status()


def buckets_of(env: Mapping[str, str]) -> list[str]:
    """The ComfyBurst buckets named in a local cloud env."""
    keys = ("JOBS", "OUTPUTS", "SIGNALS", "MODELS")
    return [env[f"COMFYBURST_{k}_BUCKET"] for k in keys if env.get(f"COMFYBURST_{k}_BUCKET")]


def wipe_all(env: Mapping[str, str]) -> None:
    """Everything a test may have left behind, except Pub/Sub messages (no wipe endpoint)."""
    reset_compute(env)
    wipe_firestore(env)
    wipe_buckets(env, buckets_of(env))
