"""Who is calling: the verified principal a job is owned by. Two modes (settings.auth_mode):

- `iam`: Cloud Run lets a request through only after verifying its Google ID token (the
  invoker IAM role), before our code runs. Cloud Run takes the token from
  `X-Serverless-Authorization` when that header is present (then `Authorization` reaches us as
  the client sent it, unchecked), else from `Authorization`, and removes the signature before
  passing it on. So the caller is read from the header Cloud Run checked, in that order: its
  `email` claim, else `sub`. Nothing else is trusted: `X-Goog-Authenticated-User-Email` and
  other headers are set by Identity-Aware Proxy only and can be sent by any client here.
  Served outside Cloud Run (the local cloud), nothing is verified in this mode; a request
  without a token has no caller.
- `api_key`: `X-API-Key`, whose SHA-256 must equal one of `settings.api_key_hashes` (compared
  in constant time). An entry `NAME=HEX` names its key: the caller is `key:NAME`; an unnamed
  entry gives `api-key:` and the first 12 hex digits of the hash. Missing -> 401, wrong -> 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from comfyburst.errors import Forbidden, Unauthenticated
from comfyburst.settings import AuthMode

MAX_PRINCIPAL_CHARS = 320
# The header Cloud Run checks first, then the one it checks otherwise.
VERIFIED_TOKEN_HEADERS = ("X-Serverless-Authorization", "Authorization")


def authenticate(headers: Any, settings: object) -> str | None:
    """The caller's identity; raises Unauthenticated/Forbidden in api_key mode.

    `headers` is looked up case-insensitively (werkzeug Headers).
    """
    mode = AuthMode(getattr(settings, "auth_mode", AuthMode.IAM))
    if mode is AuthMode.API_KEY:
        return _api_key_caller(headers.get("X-API-Key"), getattr(settings, "api_key_hashes", []))
    return _iam_caller(headers)


def admin_principals(settings: object) -> frozenset[str]:
    """The deployer's admin principals (they see every job)."""
    return frozenset(p.strip() for p in getattr(settings, "admin_principals", []) if p.strip())


def _api_key_caller(key: str | None, entries: list[str]) -> str:
    if not key:
        raise Unauthenticated("an X-API-Key header is required")
    digest = hashlib.sha256(key.encode()).hexdigest()
    caller: str | None = None
    for entry in entries:
        name, _, expected = entry.strip().rpartition("=")
        # No early exit: the time taken does not tell which key (or how much of one) matched.
        if hmac.compare_digest(digest, expected.strip().lower()) and caller is None:
            caller = f"key:{name.strip()}" if name.strip() else f"api-key:{digest[:12]}"
    if caller is None:
        raise Forbidden("the API key is not valid")
    return caller


def _iam_caller(headers: Any) -> str | None:
    for header in VERIFIED_TOKEN_HEADERS:
        value = headers.get(header)
        if value:
            # Only the first token present was checked by Cloud Run; never fall through.
            return _token_subject(value)
    return None


def _token_subject(authorization: str) -> str | None:
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    if not isinstance(claims, dict):
        return None
    caller = claims.get("email") or claims.get("sub")
    if not isinstance(caller, str) or not caller or not caller.isprintable():
        return None
    return caller[:MAX_PRINCIPAL_CHARS]
