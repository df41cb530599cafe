"""Cloud Functions entry points. Each reads settings once per process (lazily, on first use),
wires the adapters, calls one use case and maps errors to a response."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import flask
import functions_framework

from comfyburst.logs import setup_logging

if TYPE_CHECKING:  # the services load on first use, not at import
    from cloudevents.http import CloudEvent

    from comfyburst.api import ApiDeps
    from comfyburst.domain.reaper import ReaperPolicy
    from comfyburst.services.complete import CompletionDeps
    from comfyburst.services.reap import ReaperDeps
    from comfyburst.services.webhooks import DeliveryDeps

T = TypeVar("T")

setup_logging()


class Lazy(Generic[T]):
    """A value built on first use, once per process; `set` replaces it (tests)."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def __call__(self) -> T:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._build()
        return self._value

    def set(self, value: T | None) -> None:
        self._value = value


def _build_api_deps() -> ApiDeps:
    from comfyburst import wiring
    from comfyburst.api import build_api_deps
    from comfyburst.settings import FunctionSettings

    settings = FunctionSettings()
    storage = wiring.storage_client(settings)
    return build_api_deps(
        settings,
        store=wiring.job_store(settings),
        blobs=wiring.blob_store(settings, storage),
        signer=wiring.url_signer(settings, storage),
        publisher=wiring.publisher(settings),
        fleet=wiring.fleet(settings),
        clock=wiring.clock(),
        views=wiring.job_views(settings),
        uploads=wiring.model_uploads(settings, storage),
        io=wiring.io_pool("api-io", 32),
        environments=wiring.environment_store(settings),
    )


api_deps = Lazy(_build_api_deps)


@functions_framework.http
def api(request: flask.Request) -> flask.Response:
    """The HTTP API: /jobs (GET lists, POST submits), /jobs:validate, /jobs/{id} (?wait_s),
    /jobs/{id}:cancel, /openapi.json, /healthz."""
    from comfyburst.api import handle

    return handle(request, api_deps)


# --- done-flag trigger and reaper (services/complete.py, services/reap.py) ----------------


def _build_completion_deps() -> CompletionDeps:
    from comfyburst import wiring
    from comfyburst.domain.receipts import job_pricer
    from comfyburst.services.complete import CompletionDeps
    from comfyburst.settings import FunctionSettings

    settings = FunctionSettings()
    storage = wiring.storage_client(settings)
    return CompletionDeps(
        store=wiring.job_store(settings),
        blobs=wiring.blob_store(settings, storage),
        signer=wiring.url_signer(settings, storage),
        publisher=wiring.publisher(settings),
        clock=wiring.clock(),
        signals_bucket=settings.signals_bucket,
        outputs_bucket=settings.outputs_bucket,
        reads=wiring.io_pool("done-flag-read", 4),
        fleet=wiring.fleet(settings),  # lastStartTimestamp of a booted VM, for the phases
        price_of=job_pricer(settings.gpu_class_set(), settings.pool_price_per_hour),
        environments=wiring.environment_store(settings),  # a build job's end marks its env
    )


completion_deps = Lazy(_build_completion_deps)

_FINALIZED = "google.cloud.storage.object.v1.finalized"


@functions_framework.cloud_event
def on_done_flag(cloud_event: CloudEvent) -> None:
    """Eventarc storage trigger on the signals bucket: complete the job a done.json is about.

    Returns normally (200) for anything that must not be retried, including a bad manifest;
    raises (500, so Eventarc redelivers) only when the result could not be published.
    """
    import logging

    from comfyburst.services.complete import handle_done_flag, parse_storage_event

    event_type = cloud_event["type"]
    if event_type != _FINALIZED:
        logging.getLogger(__name__).info("ignoring %s event", event_type)
        return
    obj = parse_storage_event(
        cloud_event.data, cloud_event.get("source"), cloud_event.get("subject")
    )
    handle_done_flag(completion_deps(), obj)


def _build_reaper_deps() -> tuple[ReaperDeps, ReaperPolicy]:
    from comfyburst import wiring
    from comfyburst.domain.receipts import job_pricer
    from comfyburst.services.dispatch import Dispatcher
    from comfyburst.services.reap import ReaperDeps, policy_from
    from comfyburst.settings import FunctionSettings

    settings = FunctionSettings()
    store, fleet, clock = wiring.job_store(settings), wiring.fleet(settings), wiring.clock()
    storage = wiring.storage_client(settings)
    io = wiring.io_pool("reaper-io", 32)
    dispatcher = Dispatcher(store, fleet, clock, settings, io=io, retires=True)
    deps = ReaperDeps(
        store,
        fleet,
        wiring.publisher(settings),
        clock,
        dispatcher.dispatch_many,
        # The safety net for lost or late done events: it completes jobs from their flags.
        blobs=wiring.blob_store(settings, storage),
        signer=wiring.url_signer(settings, storage),
        signals_bucket=settings.signals_bucket,
        outputs_bucket=settings.outputs_bucket,
        price_of=job_pricer(settings.gpu_class_set(), settings.pool_price_per_hour),
        environments=wiring.environment_store(settings),
        # What a VM the reaper starts for a warm schedule must read first (services/_warm_vms.py).
        deployment_config=settings.deployment_config().model_dump_json(),
    )
    if any(c.creates for c in settings.gpu_class_set().classes):  # the reaper deletes idle VMs
        from comfyburst.services.prune import prune_pool

        days = settings.vm_idle_delete_days
        pool_pruner.set(lambda now: prune_pool(store, fleet, now, days))
    return deps, policy_from(settings)


reaper_deps = Lazy(_build_reaper_deps)
# Set by _build_reaper_deps when the deployment creates VMs; by default nothing is pruned.
pool_pruner: Lazy[Callable[[Any], list[Any]]] = Lazy(lambda: lambda _now: [])


@functions_framework.http
def reaper(request: flask.Request) -> flask.Response:
    """Cloud Scheduler, every minute: end stuck jobs, stop idle VMs, dispatch queued jobs.

    Answers 200 with a summary even when single actions failed (the next period retries them).
    """
    from comfyburst.services.reap import run_reaper

    deps, policy = reaper_deps()
    summary = run_reaper(deps, policy)
    try:
        summary["deleted_vms"] = pool_pruner()(deps.clock.now())
    except Exception as exc:  # the next period tries again
        logging.getLogger(__name__).exception("pruning the pool failed")
        summary["deleted_vms"] = [{"outcome": f"error: {type(exc).__name__}"}]
    return flask.jsonify(summary)


# --- webhook delivery (services/webhooks.py) ---------------------------------------------


def _build_delivery_deps() -> DeliveryDeps:
    from comfyburst import wiring
    from comfyburst.services.webhooks import DeliveryDeps
    from comfyburst.settings import FunctionSettings

    settings = FunctionSettings()
    return DeliveryDeps(
        store=wiring.job_store(settings),
        sender=wiring.webhook_sender(settings),
        clock=wiring.clock(),
        secrets=wiring.webhook_secrets(settings),
        timeout_s=settings.webhook_timeout_s,
    )


delivery_deps = Lazy(_build_delivery_deps)


@functions_framework.cloud_event
def on_result(cloud_event: CloudEvent) -> None:
    """The webhooks subscription on the results topic (a push subscription; functions-framework
    makes its request a `messagePublished` CloudEvent): one signed delivery per message.

    Returns (2xx: Pub/Sub acks) when delivered or when there is nothing to deliver; raises
    (500: Pub/Sub redelivers with the subscription's backoff, then dead-letters) when the
    receiver did not take it.
    """
    import logging

    from comfyburst.services.webhooks import MESSAGE_PUBLISHED, deliver, parse_pubsub_event

    if cloud_event["type"] != MESSAGE_PUBLISHED:
        logging.getLogger(__name__).info("ignoring %s event", cloud_event["type"])
        return
    try:
        message = parse_pubsub_event(cloud_event.data)
    except ValueError as exc:
        logging.getLogger(__name__).warning("dropping a malformed message: %s", exc)
        return
    deliver(delivery_deps(), message)
