"""Builds each adapter from FunctionSettings. Called by entry points, never at import.

Emulator hosts (FIRESTORE_EMULATOR_HOST, STORAGE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST) are
honoured by the client libraries themselves; the Compute endpoint comes from settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from comfyburst.adapters.clock import SystemClock
from comfyburst.adapters.compute import ComputeFleet
from comfyburst.adapters.firestore_store import FirestoreJobStore
from comfyburst.adapters.gcs import GcsBlobStore, IamUrlSigner, KeyFileUrlSigner
from comfyburst.adapters.pubsub import PubSubPublisher
from comfyburst.ports import Publisher
from comfyburst.settings import FunctionSettings


def clock() -> SystemClock:
    return SystemClock()


def io_pool(name: str, max_workers: int) -> ThreadPoolExecutor:
    """A thread pool for a use case's independent calls; one per process, built by the entry
    point (threads start on first use)."""
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)


def firestore_client(settings: FunctionSettings) -> Any:
    from google.cloud import firestore

    return firestore.Client(project=settings.project_id)


def storage_client(settings: FunctionSettings) -> Any:
    from google.cloud.storage import Client

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        # The emulator needs no credentials; looking for them probes the GCE metadata server,
        # which costs ~20 s off Google Cloud.
        from google.auth.credentials import AnonymousCredentials

        return Client(project=settings.project_id, credentials=AnonymousCredentials())
    return Client(project=settings.project_id)


def job_store(settings: FunctionSettings, client: Any = None) -> FirestoreJobStore:
    return FirestoreJobStore(client or firestore_client(settings), settings)


def environment_store(settings: FunctionSettings, client: Any = None) -> Any:
    """Environment documents (custom-node packs) for the API."""
    from comfyburst.adapters.firestore_environments import FirestoreEnvironmentStore

    return FirestoreEnvironmentStore(client or firestore_client(settings), settings)


def blob_store(settings: FunctionSettings, client: Any = None) -> GcsBlobStore:
    return GcsBlobStore(client or storage_client(settings))


def model_uploads(settings: FunctionSettings, client: Any = None) -> Any:
    """Upload sessions into the models bucket; None without one."""
    if not settings.models_bucket:
        return None
    from comfyburst.adapters.gcs_uploads import GcsModelUploads

    return GcsModelUploads(client or storage_client(settings))


def url_signer(settings: FunctionSettings, client: Any = None) -> KeyFileUrlSigner | IamUrlSigner:
    """A key-file signer when a key is configured (local), else key-less IAM signing."""
    client = client or storage_client(settings)
    if settings.signing_key_file:
        return KeyFileUrlSigner(client, settings.signing_key_file)
    import google.auth

    credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    return IamUrlSigner(client, credentials, settings.signing_service_account)


def publisher(settings: FunctionSettings, client: Any = None) -> Publisher:
    from google.cloud.pubsub_v1 import PublisherClient
    from google.cloud.pubsub_v1.types import BatchSettings

    # One result per publish, and we wait for it: batching would only add its 10 ms latency.
    client = client or PublisherClient(batch_settings=BatchSettings(max_messages=1))
    real: Publisher = PubSubPublisher(
        client, client.topic_path(settings.project_id, settings.results_topic)
    )
    for wrap in _PUBLISHER_WRAPPERS:
        real = wrap(real)
    return real


# Wrappers an embedding process puts around every publisher built here (the local cloud's
# chaos run injects its publish faults this way); none in a deployment.
_PUBLISHER_WRAPPERS: list[Callable[[Publisher], Publisher]] = []


def wrap_publishers(wrapper: Callable[[Publisher], Publisher]) -> None:
    """Have every publisher built from now on wrapped by `wrapper` (outermost last)."""
    _PUBLISHER_WRAPPERS.append(wrapper)


def fleet(settings: FunctionSettings) -> ComputeFleet:
    from google.cloud import compute_v1

    kwargs: dict[str, Any] = {}
    if settings.compute_endpoint:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        kwargs = {
            "credentials": AnonymousCredentials(),
            "client_options": ClientOptions(api_endpoint=settings.compute_endpoint),
        }
    return ComputeFleet(
        compute_v1.InstancesClient(**kwargs),
        compute_v1.ZoneOperationsClient(**kwargs),
        settings.project_id,
        settings.fleet_zones(),  # every GPU class's zones
        settings.pool_label,
        settings.create_wait_s,
    )


def job_views(settings: FunctionSettings, client: Any = None) -> Any:
    """Job lists and change waits for the API."""
    from comfyburst.adapters.firestore_views import FirestoreJobViews

    return FirestoreJobViews(client or firestore_client(settings), settings)


def webhook_secrets(settings: FunctionSettings) -> Any:
    """The signing secrets, current first (both while one is rotated out); read once."""
    from comfyburst.domain.webhooks import parse_secrets

    secrets = parse_secrets([settings.webhook_secret, settings.webhook_secret_previous])
    return lambda: secrets


def webhook_sender(settings: FunctionSettings) -> Any:
    from comfyburst.adapters.webhook_http import HttpWebhookSender

    return HttpWebhookSender(allow_loopback=settings.webhook_allow_loopback)
