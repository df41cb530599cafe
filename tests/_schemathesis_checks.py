"""The schemathesis checks our own OpenAPI documents are held to (/openapi.json, /api/v2):
no 5xx, and every answer (status, content type, body) as documented; negative data refused,
unsupported methods and missing credentials answered as documented."""

from __future__ import annotations

from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
    ignored_auth,
]
