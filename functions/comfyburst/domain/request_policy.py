"""What a job request may contain beyond its schema: sizes, model URLs, workflow shape.

Pure checks, no I/O. The limits and allowlists come from FunctionSettings through
`RequestPolicy.from_settings`, so tests can build a policy by hand.

Model URLs (each failure names the offending field): `gs://bucket/object` only for buckets of
the deployment (`all_model_buckets()`), spelt canonically and never the models bucket's mirror
(the one gs:// rule, `domain/gs_urls.py`); anything else must pass the one outbound URL rule,
`comfyburst.domain.urls.check_url` (https to the allowlist, or an exact `http_model_hosts`
test entry), which the worker applies again on every redirect hop, where it also resolves the
name, refuses non-public addresses and connects to the address it checked.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from comfyburst.domain import gpu_classes
from comfyburst.domain.gpu_classes import GpuClasses
from comfyburst.domain.gs_urls import MIRROR_PREFIX, is_mirror, parse_gs_url
from comfyburst.domain.urls import (
    Target,
    UrlRefused,
    UrlRule,
    check_address,
    check_url,
    is_ip_literal,
    is_private_name,
)
from comfyburst.errors import InvalidRequest, PayloadTooLarge
from comfyburst.schema import JobRequest

# Headroom in the raw body for everything that is neither workflow nor input image bytes
# (model list, options, JSON punctuation).
_BODY_OVERHEAD_BYTES = 1_000_000


@dataclass(frozen=True)
class RequestPolicy:
    """Limits and allowlists a job request is checked against."""

    model_hosts: tuple[str, ...]
    http_model_hosts: tuple[str, ...] = ()
    gs_model_buckets: tuple[str, ...] = ()
    models_bucket: str | None = None  # its mirror (`models/`) is the workers', not a source
    max_workflow_bytes: int = 2_000_000
    max_nodes: int = 2000
    max_input_bytes: int = 20_000_000
    allow_loopback_webhooks: bool = False
    gpu_classes: GpuClasses | None = None  # None: any class name passes (not checked here)

    @classmethod
    def from_settings(cls, settings: Any) -> RequestPolicy:
        """The policy of a deployment (FunctionSettings)."""
        return cls(
            model_hosts=tuple(h.lower().rstrip(".") for h in settings.model_hosts),
            http_model_hosts=tuple(h.lower() for h in settings.http_model_hosts),
            gs_model_buckets=tuple(settings.all_model_buckets()),
            models_bucket=getattr(settings, "models_bucket", None),
            max_workflow_bytes=settings.max_workflow_bytes,
            max_nodes=settings.max_nodes,
            max_input_bytes=settings.max_input_bytes,
            allow_loopback_webhooks=getattr(settings, "webhook_allow_loopback", False),
            gpu_classes=gpu_classes.for_settings(settings),
        )

    @property
    def url_rule(self) -> UrlRule:
        """The one outbound URL rule with this deployment's model allowlists."""
        return UrlRule.of(self.model_hosts, (), self.http_model_hosts)

    @property
    def max_body_bytes(self) -> int:
        """The largest raw body worth parsing: base64 inputs grow by 4/3."""
        return self.max_workflow_bytes + self.max_input_bytes * 4 // 3 + _BODY_OVERHEAD_BYTES


def check_body_size(size_bytes: int, policy: RequestPolicy) -> None:
    """Refuse a body too large to be a valid request, before it is parsed."""
    if size_bytes > policy.max_body_bytes:
        raise PayloadTooLarge(
            f"request body is {size_bytes} bytes; at most {policy.max_body_bytes} are accepted"
        )


def check_raw(data: Any, policy: RequestPolicy) -> int:
    """Shape and size checks on the parsed JSON before the schema; returns the workflow bytes."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    workflow = data.get("workflow")
    if not isinstance(workflow, Mapping):
        raise InvalidRequest(
            "workflow must be an API-format ComfyUI workflow: an object of nodes",
            field="workflow",
        )
    if len(workflow) > policy.max_nodes:
        raise PayloadTooLarge(
            f"workflow has {len(workflow)} nodes; at most {policy.max_nodes} are accepted",
            field="workflow",
        )
    for node_id, node in workflow.items():
        if not isinstance(node, Mapping):
            raise InvalidRequest("a workflow node must be an object", field=f"workflow.{node_id}")
        if not isinstance(node.get("class_type"), str):
            raise InvalidRequest(
                "a workflow node needs a class_type string (is this the API format?)",
                field=f"workflow.{node_id}.class_type",
            )
        if not isinstance(node.get("inputs"), Mapping):
            raise InvalidRequest(
                "a workflow node needs an inputs object", field=f"workflow.{node_id}.inputs"
            )
    workflow_bytes = len(json.dumps(workflow, separators=(",", ":")).encode())
    if workflow_bytes > policy.max_workflow_bytes:
        raise PayloadTooLarge(
            f"workflow is {workflow_bytes} bytes; at most {policy.max_workflow_bytes} are accepted",
            field="workflow",
        )
    inputs = data.get("inputs")
    if isinstance(inputs, list):
        encoded = sum(
            len(item["data_b64"])
            for item in inputs
            if isinstance(item, Mapping) and isinstance(item.get("data_b64"), str)
        )
        if encoded * 3 // 4 > policy.max_input_bytes:
            raise PayloadTooLarge(
                f"input images total about {encoded * 3 // 4} bytes; at most "
                f"{policy.max_input_bytes} are accepted",
                field="inputs",
            )
    return workflow_bytes


def check_request(request: JobRequest, policy: RequestPolicy) -> None:
    """Everything the schema cannot know: model URLs against the allowlists, input sizes."""
    for index, model in enumerate(request.models):
        check_model_url(model.url, policy, field=f"models.{index}.url")
    if request.webhook_url is not None:
        check_webhook_url(request.webhook_url, allow_loopback=policy.allow_loopback_webhooks)
    if policy.gpu_classes is not None:
        policy.gpu_classes.resolve(request.options.gpu_class)
    total = 0
    for index, image in enumerate(request.inputs):
        size = image.size_bytes
        if size <= 0:
            raise InvalidRequest("an input image must not be empty", field=f"inputs.{index}")
        total += size
    if total > policy.max_input_bytes:
        raise PayloadTooLarge(
            f"input images total {total} bytes; at most {policy.max_input_bytes} are accepted",
            field="inputs",
        )


def check_model_url(url: str, policy: RequestPolicy, *, field: str = "url") -> None:
    """Raise InvalidRequest unless a worker may download a model from `url` (`gs://` of the
    deployment's model buckets, else the one outbound URL rule of `domain/urls.py`)."""

    def reject(why: str) -> InvalidRequest:
        return InvalidRequest(f"model URL {why}", field=field)

    _parts, _port, scheme = _split_url(url, reject)
    if scheme == "gs":
        _check_gs(url, policy, reject)
        return
    try:
        check_url(url, policy.url_rule)
    except UrlRefused as exc:
        raise reject(str(exc)) from None


def _split_url(url: str, reject: Any) -> tuple[SplitResult, int | None, str]:
    """The parts, port and lowercase scheme of a URL every URL rule starts from: ASCII, no
    spaces or control characters, parseable, no user info."""
    if not url.isascii() or any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
        raise reject("must be ASCII without spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise reject(f"is malformed: {exc}") from None
    if "@" in parts.netloc:
        raise reject("must not contain user info")
    return parts, port, parts.scheme.lower()


def _check_gs(url: str, policy: RequestPolicy, reject: Any) -> None:
    try:
        target = parse_gs_url(url)
    except UrlRefused as exc:
        raise reject(str(exc)) from None
    if target.bucket not in policy.gs_model_buckets:
        allowed = ", ".join(policy.gs_model_buckets) or "none configured"
        raise reject(f"bucket {target.bucket} is not a model bucket of this deployment ({allowed})")
    if is_mirror(target, policy.models_bucket):
        raise reject(
            f"names the workers' model mirror ({MIRROR_PREFIX} in the models bucket), which "
            "jobs may not name; an uploaded model is named by the URL POST /uploads answered"
        )


_is_ip_literal = is_ip_literal


# --- webhook URLs ----------------------------------------------------------------------------
# Checked at submit (`check_request`) and again at every delivery, where the adapter also
# resolves the name, checks every address with `check_webhook_address` and connects to the
# address it checked (adapters/webhook_http.py). Loopback receivers over http are accepted only
# with `webhook_allow_loopback` (the local cloud's setting); private, link-local, shared,
# multicast and reserved addresses never are.


@dataclass(frozen=True)
class WebhookTarget:
    scheme: str
    host: str
    port: int
    path: str  # path and query, as sent in the request line


def check_webhook_url(
    url: str, *, allow_loopback: bool = False, field: str = "webhook_url"
) -> WebhookTarget:
    """Raise InvalidRequest unless `url` may receive webhooks; the parts to connect to."""

    def reject(why: str) -> InvalidRequest:
        return InvalidRequest(f"webhook URL {why}", field=field)

    parts, port, scheme = _split_url(url, reject)
    if parts.fragment:
        raise reject("must not contain a fragment")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise reject("has no host")
    loopback = _is_loopback_literal(host)
    if loopback and not allow_loopback:
        raise reject(f"names a loopback address: {host}")
    if scheme == "http" and not loopback:
        raise reject("must use https://")
    if scheme not in ("https", "http"):
        raise reject("must use https://")
    if not loopback:
        if port not in (None, 443):
            raise reject("must not name a port other than 443")
        if _is_ip_literal(host):
            raise reject("must name a host, not an IP address")
        if is_private_name(host):
            raise reject(f"names a private host: {host}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return WebhookTarget(scheme, host, port or (443 if scheme == "https" else 80), path)


def check_webhook_address(
    address: str, *, allow_loopback: bool, field: str = "webhook_url"
) -> None:
    """Raise InvalidRequest unless a webhook may connect to this resolved address (the one
    address rule, `domain.urls.check_address`; loopback only with `allow_loopback`)."""
    target = Target("https", "its host", 443, test=allow_loopback and _is_loopback(address))
    try:
        check_address(address, target)
    except UrlRefused as exc:
        raise InvalidRequest(f"webhook URL: {exc}", field=field) from None


def _is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return (mapped or ip).is_loopback


def _is_loopback_literal(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
