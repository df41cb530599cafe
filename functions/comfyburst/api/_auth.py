"""Who is calling. Two modes (settings.auth_mode):

- `iam`: Cloud Run lets a request through only after verifying its Google ID token (the
  invoker IAM role), before our code runs. We only read who the caller is, for the job's
  `caller` field: `X-Goog-Authenticated-User-Email`, else the `email` claim of the bearer
  token's payload, decoded without verifying it again (Cloud Run did). Served outside Cloud
  Run (the local cloud), nothing is verified in this mode.
- `api_key`: `X-API-Key`, whose SHA-256 must equal one of `settings.api_key_hashes` (compared
  in constant time). Missing -> 401, wrong -> 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from comfyburst.errors import Forbidden, Unauthenticated
from comfyburst.settings import AuthMode

_IAP_PREFIX = "accounts.google.com:"


def authenticate(headers: Any, settings: object) -> str | None:
    """The caller's identity; raises Unauthenticated/Forbidden in api_key mode.

    `headers` is looked up case-insensitively (werkzeug Headers).
    """
    mode = AuthMode(getattr(settings, "auth_mode", AuthMode.IAM))
    if mode is AuthMode.API_KEY:
        return _api_key_caller(headers.get("X-API-Key"), getattr(settings, "api_key_hashes", []))
    return _iam_caller(headers)


def _api_key_caller(key: str | None, hashes: list[str]) -> str:
    if not key:
        raise Unauthenticated("an X-API-Key header is required")
    digest = hashlib.sha256(key.encode()).hexdigest()
    matched = False
    for expected in hashes:
        # No early exit: the time taken does not tell which key (or how much of one) matched.
        matched |= hmac.compare_digest(digest, expected.strip().lower())
    if not matched:
        raise Forbidden("the API key is not valid")
    return f"api-key:{digest[:12]}"


def _iam_caller(headers: Any) -> str | None:
    email = headers.get("X-Goog-Authenticated-User-Email")
    if email:
        return email.removeprefix(_IAP_PREFIX)
    authorization = headers.get("Authorization") or ""
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
    return str(caller)[:320] if caller else None
