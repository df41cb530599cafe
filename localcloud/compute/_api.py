"""HTTP routing: the Compute REST subset google-cloud-compute calls, plus `/_standin/*` admin."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pydantic import TypeAdapter, ValidationError

from localcloud.compute import _errors as errors
from localcloud.compute._config import Capacity, Fault
from localcloud.compute._fleet import Fleet
from localcloud.compute._http import QuietHandler

_ZONE = r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)"
_TEMPLATES = (
    r"/compute/v1/projects/(?P<project>[^/]+)/(?:global|regions/(?P<region>[^/]+))"
    r"/instanceTemplates"
)
_FAULTS: TypeAdapter[Fault | list[Fault]] = TypeAdapter(Fault | list[Fault])

Route = Callable[[Fleet, dict[str, str], dict[str, str], Any], tuple[int, Any]]


def _aggregated(fleet: Fleet, m: dict[str, str], q: dict[str, str], _b: Any) -> tuple[int, Any]:
    grouped = fleet.list_instances(m["project"], None, q.get("filter"))
    items: dict[str, Any] = {}
    for zone, found in sorted(grouped.items()):
        # GCE lists every zone; the empty ones carry a warning instead of instances.
        items[f"zones/{zone}"] = (
            {"instances": found}
            if found
            else {
                "warning": {
                    "code": "NO_RESULTS_ON_PAGE",
                    "message": "There are no results for scope 'zones/{zone}' on this page.",
                    "data": [{"key": "scope", "value": f"zones/{zone}"}],
                }
            }
        )
    return 200, {
        "kind": "compute#instanceAggregatedList",
        "id": f"projects/{m['project']}/aggregated/instances",
        "items": items,
    }


def _list(fleet: Fleet, m: dict[str, str], q: dict[str, str], _b: Any) -> tuple[int, Any]:
    found = fleet.list_instances(m["project"], m["zone"], q.get("filter"))[m["zone"]]
    body: dict[str, Any] = {
        "kind": "compute#instanceList",
        "id": f"projects/{m['project']}/zones/{m['zone']}/instances",
    }
    if found:
        body["items"] = found
    return 200, body


def _instance_call(method: str) -> Route:
    def route(fleet: Fleet, m: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any]:
        args = (m["project"], m["zone"], m["name"])
        if method == "get":
            return 200, fleet.get_instance(*args)
        if method == "setMetadata":
            return 200, fleet.set_metadata(*args, body, q.get("requestId"))
        action = {
            "start": fleet.start,
            "stop": fleet.stop,
            "delete": fleet.delete,
            "simulateMaintenanceEvent": fleet.simulate_maintenance_event,
        }[method]
        return 200, action(*args, q.get("requestId"))

    return route


def _insert(fleet: Fleet, m: dict[str, str], q: dict[str, str], body: Any) -> tuple[int, Any]:
    if body is not None and not isinstance(body, dict):
        raise errors.invalid("resource", type(body).__name__, "The body must be an Instance.")
    op = fleet.insert(
        m["project"], m["zone"], body, q.get("sourceInstanceTemplate"), q.get("requestId")
    )
    return 200, op


def _template_call(insert: bool) -> Route:
    def route(fleet: Fleet, m: dict[str, str], _q: dict[str, str], body: Any) -> tuple[int, Any]:
        region = m.get("region")
        if insert:
            if not isinstance(body, dict):
                raise errors.invalid("resource", "", "The body must be an InstanceTemplate.")
            return 200, fleet.insert_template(m["project"], region, body)
        return 200, fleet.get_template(m["project"], region, m["name"])

    return route


def _operation_call(wait: bool) -> Route:
    def route(fleet: Fleet, m: dict[str, str], _q: dict[str, str], _b: Any) -> tuple[int, Any]:
        call = fleet.wait_operation if wait else fleet.get_operation
        return 200, call(m["project"], m["zone"], m["op"])

    return route


def _admin_instances(fleet: Fleet, *_: Any) -> tuple[int, Any]:
    return 200, {"instances": fleet.snapshot()}


def _admin_add_faults(fleet: Fleet, _m: Any, _q: Any, body: Any) -> tuple[int, Any]:
    # Accept one fault, a list, or {"faults": [...]}.
    payload = body["faults"] if isinstance(body, dict) and "faults" in body else body
    try:
        parsed = _FAULTS.validate_python(payload)
    except ValidationError as exc:
        raise errors.GceError(400, "invalid", f"Invalid fault: {exc}") from exc
    faults = parsed if isinstance(parsed, list) else [parsed]
    armed = fleet.add_faults(faults)
    return 200, {"faults": [f.model_dump(mode="json") for f in armed]}


def _admin_faults(fleet: Fleet, *_: Any) -> tuple[int, Any]:
    return 200, {"faults": [f.model_dump(mode="json") for f in fleet.faults()]}


def _admin_clear_faults(fleet: Fleet, *_: Any) -> tuple[int, Any]:
    fleet.clear_faults()
    return 200, {"faults": []}


def _admin_stats(fleet: Fleet, *_: Any) -> tuple[int, Any]:
    return 200, fleet.stats()


def _admin_preempt(fleet: Fleet, m: dict[str, str], *_: Any) -> tuple[int, Any]:
    # The stand-in's own trigger (chaos, tests): preempts now, like Compute Engine would.
    if not fleet.preempt(m["zone"], m["name"]):
        raise errors.not_ready(f"{m['zone']}/{m['name']} (not a RUNNING Spot VM)")
    return 200, {"preempted": m["name"]}


def _admin_preemption_rate(fleet: Fleet, _m: Any, _q: Any, body: Any) -> tuple[int, Any]:
    rate = body.get("rate_per_s") if isinstance(body, dict) else None
    if not isinstance(rate, int | float) or rate < 0:
        raise errors.invalid("rate_per_s", str(rate), "A rate per second >= 0.")
    fleet.set_preemption_rate(float(rate))
    return 200, {"rate_per_s": float(rate)}


def _admin_capacity(fleet: Fleet, *_: Any) -> tuple[int, Any]:
    return 200, fleet.capacity().model_dump()


def _admin_set_capacity(fleet: Fleet, _m: Any, _q: Any, body: Any) -> tuple[int, Any]:
    if not isinstance(body, dict):
        raise errors.invalid("capacity", type(body).__name__, "The body must be an object.")
    try:
        capacity = Capacity.model_validate(body)
    except ValidationError as exc:
        raise errors.GceError(400, "invalid", f"Invalid capacity: {exc}") from exc
    return 200, fleet.set_capacity(capacity).model_dump()


def _admin_reset(fleet: Fleet, *_: Any) -> tuple[int, Any]:
    fleet.reset()
    return 200, {"instances": fleet.snapshot()}


_ROUTES: list[tuple[str, re.Pattern[str], Route]] = [
    (m, re.compile(p + r"/?$"), r)
    for m, p, r in [
        ("GET", r"/compute/v1/projects/(?P<project>[^/]+)/aggregated/instances", _aggregated),
        ("GET", _ZONE + r"/instances", _list),
        ("POST", _ZONE + r"/instances", _insert),
        ("DELETE", _ZONE + r"/instances/(?P<name>[^/]+)", _instance_call("delete")),
        (
            "POST",
            _ZONE + r"/instances/(?P<name>[^/]+)/simulateMaintenanceEvent",
            _instance_call("simulateMaintenanceEvent"),
        ),
        ("GET", _TEMPLATES + r"/(?P<name>[^/]+)", _template_call(insert=False)),
        ("POST", _TEMPLATES, _template_call(insert=True)),
        ("GET", _ZONE + r"/instances/(?P<name>[^/]+)", _instance_call("get")),
        ("POST", _ZONE + r"/instances/(?P<name>[^/]+)/start", _instance_call("start")),
        ("POST", _ZONE + r"/instances/(?P<name>[^/]+)/stop", _instance_call("stop")),
        ("POST", _ZONE + r"/instances/(?P<name>[^/]+)/setMetadata", _instance_call("setMetadata")),
        ("GET", _ZONE + r"/operations/(?P<op>[^/]+)", _operation_call(wait=False)),
        ("POST", _ZONE + r"/operations/(?P<op>[^/]+)/wait", _operation_call(wait=True)),
        ("GET", r"/_standin/instances", _admin_instances),
        ("GET", r"/_standin/faults", _admin_faults),
        ("POST", r"/_standin/faults", _admin_add_faults),
        ("DELETE", r"/_standin/faults", _admin_clear_faults),
        ("POST", r"/_standin/reset", _admin_reset),
        ("GET", r"/_standin/stats", _admin_stats),
        (
            "POST",
            r"/_standin/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)/preempt",
            _admin_preempt,
        ),
        ("POST", r"/_standin/preemption", _admin_preemption_rate),
        ("GET", r"/_standin/capacity", _admin_capacity),
        ("POST", r"/_standin/capacity", _admin_set_capacity),
        ("GET", r"/_standin/healthz", lambda *_: (200, {"ok": True})),
    ]
]


def handler_class(fleet: Fleet) -> type[QuietHandler]:
    """A request handler bound to `fleet`."""

    class Handler(QuietHandler):
        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                body = self.read_json()
                for method, pattern, route in _ROUTES:
                    match = pattern.match(url.path)
                    if match and method == self.command:
                        status, payload = route(fleet, match.groupdict(), query, body)
                        self.send_json(status, payload)
                        return
                raise errors.unsupported(self.command, url.path)
            except errors.GceError as exc:
                self.send_json(exc.http_status, exc.body())
            except json.JSONDecodeError as exc:
                self.send_json(400, errors.GceError(400, "parseError", str(exc)).body())

        do_GET = do_POST = do_DELETE = _dispatch

    return Handler
