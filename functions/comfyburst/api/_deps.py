"""What the API's use cases need, built once per process by the entry point."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from comfyburst.ports import (
    BlobStore,
    Clock,
    EnvironmentStore,
    Fleet,
    JobStore,
    Publisher,
    UrlSigner,
)
from comfyburst.preflight import Catalogue
from comfyburst.preflight.catalogue_store import CatalogueStore
from comfyburst.services._page_key import PageTokenKey
from comfyburst.services.dispatch import Dispatcher
from comfyburst.services.submit import SubmitDeps


class _CatalogueReader:
    """The two reads the catalogue store needs, over the BlobStore port."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def read_bytes(self, bucket: str, name: str) -> bytes | None:
        return self._blobs.read(bucket, name)

    def generation(self, bucket: str, name: str) -> int | None:
        return self._blobs.generation(bucket, name)


@dataclass
class ApiDeps:
    settings: Any
    store: JobStore
    blobs: BlobStore
    signer: UrlSigner
    publisher: Publisher
    fleet: Fleet
    clock: Clock
    catalogue: Callable[[], Catalogue]
    # Job lists and change waits (adapters/firestore_views.py); None: those routes answer 503.
    views: Any = None
    # Model uploads (adapters/gcs_uploads.py); None: POST /uploads answers 503 and a job naming
    # an uploaded model is refused.
    uploads: Any = None
    # The process's thread pool (wiring.io_pool); None: the dispatcher makes its own.
    io: Executor | None = None
    # Environments of custom-node packs (adapters/firestore_environments.py); None: the
    # environment routes answer 503 (and a job naming one is refused) once sources are open.
    environments: EnvironmentStore | None = None
    dispatcher: Dispatcher = field(init=False)
    # What `GET /jobs` signs its page tokens with (read from the jobs bucket on first use).
    page_token_key: PageTokenKey = field(init=False)

    def __post_init__(self) -> None:
        self.dispatcher = Dispatcher(self.store, self.fleet, self.clock, self.settings, io=self.io)
        self.page_token_key = PageTokenKey(self.blobs, self.settings.jobs_bucket)

    def submit_deps(self) -> SubmitDeps:
        return SubmitDeps(
            self.store,
            self.blobs,
            self.clock,
            self.settings,
            self.catalogue,
            self.dispatcher,
            self.dispatcher.io,
            self.uploads,
            self.environments,
            counts=self.views,  # counts a caller's queued jobs for the queue limit
        )


def build_api_deps(
    settings: Any,
    *,
    store: JobStore,
    blobs: BlobStore,
    signer: UrlSigner,
    publisher: Publisher,
    fleet: Fleet,
    clock: Clock,
    catalogue: Callable[[], Catalogue] | None = None,
    views: Any = None,
    uploads: Any = None,
    io: Executor | None = None,
    environments: EnvironmentStore | None = None,
) -> ApiDeps:
    """ApiDeps; by default the catalogue comes from the jobs bucket (checked each minute),
    falling back to the one checked in with the package."""
    if catalogue is None:
        catalogue_store = CatalogueStore(
            _CatalogueReader(blobs), settings.jobs_bucket, name=settings.catalogue_object
        )

        def catalogue() -> Catalogue:
            return catalogue_store.get(time.monotonic())

    return ApiDeps(
        settings,
        store,
        blobs,
        signer,
        publisher,
        fleet,
        clock,
        catalogue,
        views,
        uploads,
        io,
        environments,
    )
