"""An emulated GCE metadata server for one VM (what its guest sees at GCE_METADATA_HOST)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localcloud.compute._http import QuietHandler, ServerThread

_PREFIX = "/computeMetadata/v1/"
_TEXT = "application/text"
# The real server bounds a long poll too; without timeout_sec it holds for minutes.
_MAX_WAIT_S = 300.0
_TOKEN_TTL_S = 3599
_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]

TreeFn = Callable[[], dict[str, Any]]


def instance_tree(
    *,
    project: str,
    project_number: int,
    name: str,
    zone: str,
    instance_id: int,
    machine_type: str,
    attributes: dict[str, str],
    sa_email: str,
    preempted: bool = False,
) -> dict[str, Any]:
    """The metadata hierarchy of one VM, keyed as the non-recursive paths spell it."""
    account = {"aliases": ["default"], "email": sa_email, "scopes": list(_SCOPES)}
    return {
        "instance": {
            "attributes": dict(attributes),
            "cpu-platform": "Intel Cascade Lake",
            "hostname": f"{name}.{zone}.c.{project}.internal",
            "id": instance_id,
            "machine-type": f"projects/{project_number}/machineTypes/{machine_type}",
            "maintenance-event": "NONE",
            "name": name,
            "network-interfaces": {"0": {"ip": "127.0.0.1", "network": "default"}},
            "preempted": "TRUE" if preempted else "FALSE",
            "service-accounts": {"default": account, sa_email: dict(account)},
            "zone": f"projects/{project_number}/zones/{zone}",
        },
        "project": {
            "attributes": {},
            "numeric-project-id": project_number,
            "project-id": project,
        },
    }


def _camel(key: str) -> str:
    head, *rest = key.split("-")
    return head + "".join(part.title() for part in rest)


def _recursive_json(node: Any, *, raw_keys: bool = False) -> Any:
    # The real server camelCases keys in recursive answers, but not attribute names.
    if isinstance(node, dict):
        return {
            (k if raw_keys else _camel(k)): _recursive_json(v, raw_keys=(k == "attributes"))
            for k, v in node.items()
        }
    return node


def _etag(node: Any) -> str:
    return hashlib.sha256(json.dumps(node, sort_keys=True).encode()).hexdigest()[:16]


def _resolve(tree: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in [p for p in path.split("/") if p]:
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _render(node: Any, recursive: bool, as_json: bool) -> tuple[bytes, str]:
    if recursive or (as_json and not isinstance(node, dict)):
        return json.dumps(_recursive_json(node)).encode(), "application/json"
    if isinstance(node, dict):
        lines = [f"{k}/" if isinstance(v, dict) else k for k, v in sorted(node.items())]
        return "".join(f"{line}\n" for line in lines).encode(), _TEXT
    if isinstance(node, list):
        return "".join(f"{item}\n" for item in node).encode(), _TEXT
    return str(node).encode(), _TEXT


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class MetadataServer:
    """Serves one VM's metadata; `condition` is notified whenever its tree may have changed."""

    def __init__(self, tree: TreeFn, condition: threading.Condition) -> None:
        self._tree = tree
        self.condition = condition
        self.closed = False
        self._thread = ServerThread(self._handler_class(), "127.0.0.1", 0)

    @property
    def address(self) -> str:
        """`127.0.0.1:PORT`, the value of GCE_METADATA_HOST for the guest."""
        return self._thread.address

    @property
    def port(self) -> int:
        """The listening port."""
        return int(self._thread.port)

    def close(self) -> None:
        """Stop serving and release any long poll."""
        with self.condition:
            self.closed = True
            self.condition.notify_all()
        self._thread.close()

    def _handler_class(self) -> type[QuietHandler]:
        owner = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                owner._serve(self)

        return Handler

    def _serve(self, req: QuietHandler) -> None:
        flavor = {"Metadata-Flavor": "Google"}
        url = urlsplit(req.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if url.path == "/":
            req.send_body(200, b"computeMetadata/\n", _TEXT, flavor)
            return
        if req.headers.get("Metadata-Flavor") != "Google":
            message = (
                f"Your client does not have permission to get URL {url.path} from this "
                "server. Missing Metadata-Flavor:Google header."
            )
            req.send_body(403, message.encode(), "text/html", flavor)
            return
        if not url.path.startswith(_PREFIX):
            req.send_body(404, b"Not Found\n", "text/html", flavor)
            return
        path = url.path[len(_PREFIX) :]
        parts = [p for p in path.split("/") if p]
        is_account = len(parts) == 4 and parts[:2] == ["instance", "service-accounts"]
        if is_account and parts[3] in ("token", "identity"):
            self._credential(req, parts[2], parts[3], params, flavor)
            return
        self._value(req, path, params, flavor)

    def _value(
        self, req: QuietHandler, path: str, params: dict[str, str], flavor: dict[str, str]
    ) -> None:
        recursive = params.get("recursive", "").lower() == "true"
        as_json = params.get("alt") == "json"
        wait = params.get("wait_for_change", "").lower() == "true"
        timeout_s = min(float(params.get("timeout_sec") or _MAX_WAIT_S), _MAX_WAIT_S)
        with self.condition:
            found, node = _resolve(self._tree(), path)
            etag = _etag(node)
            if found and wait:
                # Without last_etag the real server waits for a change from the current value.
                baseline = params.get("last_etag") or etag
                deadline = time.monotonic() + timeout_s
                while found and etag == baseline and not self.closed:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self.condition.wait(remaining)
                    found, node = _resolve(self._tree(), path)
                    etag = _etag(node)
        if not found:
            req.send_body(404, b"Not Found\n", "text/html", flavor)
            return
        body, content_type = _render(node, recursive, as_json)
        req.send_body(200, body, content_type, {**flavor, "ETag": etag})

    def _credential(
        self,
        req: QuietHandler,
        account: str,
        kind: str,
        params: dict[str, str],
        flavor: dict[str, str],
    ) -> None:
        with self.condition:
            tree = self._tree()
        accounts = tree["instance"]["service-accounts"]
        if account not in accounts:
            req.send_body(404, b"Not Found\n", "text/html", flavor)
            return
        if kind == "token":
            token = {
                "access_token": "ya29.localcloud-" + secrets.token_urlsafe(24),
                "expires_in": _TOKEN_TTL_S,
                "token_type": "Bearer",
            }
            req.send_body(200, json.dumps(token).encode(), "application/json", flavor)
            return
        audience = params.get("audience")
        if not audience:
            req.send_body(400, b"non-empty audience parameter required\n", _TEXT, flavor)
            return
        req.send_body(200, self._identity(tree, accounts[account], audience, params), _TEXT, flavor)

    @staticmethod
    def _identity(
        tree: dict[str, Any], account: dict[str, Any], audience: str, params: dict[str, str]
    ) -> bytes:
        # Shaped like a Google ID token but unsigned: nothing here may be trusted as real.
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience,
            "azp": account["email"],
            "email": account["email"],
            "email_verified": True,
            "exp": now + 3600,
            "iat": now,
            "iss": "https://accounts.google.com",
            "sub": str(int(hashlib.sha256(account["email"].encode()).hexdigest()[:17], 16)),
        }
        if params.get("format") == "full":
            instance, project = tree["instance"], tree["project"]
            claims["google"] = {
                "compute_engine": {
                    "instance_id": str(instance["id"]),
                    "instance_name": instance["name"],
                    "project_id": project["project-id"],
                    "project_number": project["numeric-project-id"],
                    "zone": instance["zone"].rsplit("/", 1)[-1],
                }
            }
        header = {"alg": "RS256", "kid": "localcloud-unsigned", "typ": "JWT"}
        signature = base64.urlsafe_b64encode(b"localcloud-unsigned").rstrip(b"=").decode()
        return f"{_b64(header)}.{_b64(claims)}.{signature}".encode()
