"""The one rule for `gs://` model URLs, applied at submit (`request_policy.check_model_url`,
`uploads.check_uploaded_models`) and by the worker before it reads an object
(`comfyburst_worker.model_cache`). Pure, no I/O.

A URL names exactly one object, and only one way: `gs://BUCKET/NAME` where NAME is the URL's
path without its one leading `/`, nothing stripped or normalised. So NAME has no empty
segment (no leading, doubled or trailing `/`), no `.` or `..` segment, no `%` escapes, and the
URL has no query or fragment. Anything else is refused rather than read as some other name:
`gs://B//uploads/{owner}/…` would otherwise pass a check made on one spelling and load the
object of another.

In the models bucket, `models/` is the workers' mirror (content a worker hashed itself), never
a source a job may name; `uploads/` holds callers' own uploads, whose owner submit checks
(`domain/uploads.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from comfyburst.domain.urls import UrlRefused

SCHEME = "gs://"
MIRROR_PREFIX = "models/"
# Cloud Storage bucket names: lowercase letters, digits, `-`, `_`, `.`; letter or digit at both
# ends; 3 to 222 characters (63 per dot-separated part, not checked here).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclass(frozen=True)
class GsObject:
    bucket: str
    name: str


def parse_gs_url(url: str) -> GsObject:
    """The bucket and object a canonical `gs://BUCKET/NAME` URL names; UrlRefused otherwise."""
    if not url.startswith(SCHEME):
        raise UrlRefused("must be gs://BUCKET/OBJECT")
    if not url.isascii() or any(ord(ch) <= 32 or ord(ch) == 127 for ch in url):
        raise UrlRefused("must be ASCII without spaces or control characters")
    bucket, slash, name = url[len(SCHEME) :].partition("/")
    if not _BUCKET.match(bucket):
        raise UrlRefused("must be gs://BUCKET/OBJECT")
    if not slash or not name:
        raise UrlRefused("must name an object: gs://BUCKET/OBJECT")
    if any(ch in name for ch in "?#%\\"):
        raise UrlRefused("must name its object as it is: no query, fragment, % or \\")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UrlRefused("must name its object as it is: no empty, '.' or '..' path segment")
    return GsObject(bucket, name)


def is_mirror(target: GsObject, models_bucket: str | None) -> bool:
    """Whether `target` is in the models bucket's mirror, which only workers use."""
    return (
        bool(models_bucket)
        and target.bucket == models_bucket
        and (target.name.startswith(MIRROR_PREFIX))
    )
