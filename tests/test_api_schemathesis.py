"""Schemathesis against /openapi.json of the API (the WSGI app of functions/main.py on the
emulators, api_key mode): no 5xx, and every answer matches the documented schema.

Bounded: a few examples per operation. Random workflows rarely pass pre-flight, so
"positive data is accepted" is not checked (a schema-valid request is allowed a 422).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from tests._schemathesis_checks import CHECKS
from tests.test_api_emulator import Cloud, settings, standin  # noqa: F401  (module fixtures)

# Eight operations plus the local cloud's start outlast the default 120 s on a loaded machine.
pytestmark = [pytest.mark.emulator, pytest.mark.timeout(300)]

API_KEY = "schemathesis-key"


@pytest.fixture
def api_schema(
    settings: Any,  # noqa: F811
    standin: Any,  # noqa: F811
    blob_store: Any,
    signer: Any,
    publisher: Any,
    storage_client: Any,
) -> Any:
    from comfyburst.adapters.gcs_uploads import GcsModelUploads

    keyed = settings.model_copy(
        update={
            "auth_mode": "api_key",
            "api_key_hashes": [hashlib.sha256(API_KEY.encode()).hexdigest()],
            "model_upload_principals": ["*"],
        }
    )
    standin.reset()
    cloud = Cloud(keyed, standin, blob_store, signer, publisher)
    cloud.deps.uploads = GcsModelUploads(storage_client)  # POST /uploads answers too
    return schemathesis.openapi.from_wsgi("/openapi.json", cloud.client.application)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hypothesis_settings(
    max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
def test_api_matches_its_openapi_document(case: Any) -> None:
    case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS)
