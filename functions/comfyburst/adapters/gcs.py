"""BlobStore and UrlSigner ports over google-cloud-storage."""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Any

from google.api_core import exceptions as gexc
from google.oauth2 import service_account

from comfyburst.errors import PreconditionFailed


class GcsBlobStore:
    """Objects in buckets; one storage call per method."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def _blob(self, bucket: str, name: str) -> Any:
        # bucket()/blob() only build references; no request is made.
        return self._client.bucket(bucket).blob(name)

    def write(
        self,
        bucket: str,
        name: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        if_generation_match: int | None = None,
    ) -> int:
        blob = self._blob(bucket, name)
        try:
            blob.upload_from_string(
                data, content_type=content_type, if_generation_match=if_generation_match
            )
        except gexc.PreconditionFailed:
            raise PreconditionFailed(
                f"gs://{bucket}/{name} does not match generation {if_generation_match}"
            ) from None
        return int(blob.generation)

    def read(self, bucket: str, name: str) -> bytes | None:
        try:
            data: bytes = self._blob(bucket, name).download_as_bytes()
        except gexc.NotFound:
            return None
        return data

    def generation(self, bucket: str, name: str) -> int | None:
        blob = self._client.bucket(bucket).get_blob(name)
        return None if blob is None else int(blob.generation)

    def list(self, bucket: str, prefix: str) -> list[str]:
        return [blob.name for blob in self._client.list_blobs(bucket, prefix=prefix)]

    def delete(self, bucket: str, name: str) -> None:
        with contextlib.suppress(gexc.NotFound):  # already gone is what the caller wanted
            self._blob(bucket, name).delete()

    def upload_file(self, bucket: str, name: str, path: str, content_type: str) -> int:
        blob = self._blob(bucket, name)
        blob.upload_from_filename(path, content_type=content_type)
        return int(blob.generation)

    def download_file(self, bucket: str, name: str, path: str) -> bool:
        # Stream into a side file, then rename, so a reader never sees half a file.
        partial = f"{path}.part"
        try:
            self._blob(bucket, name).download_to_filename(partial)
        except gexc.NotFound:
            if os.path.exists(partial):
                os.remove(partial)
            return False
        os.replace(partial, path)
        return True


class KeyFileUrlSigner:
    """V4 signed URLs from a service-account key file (local cloud and tools only)."""

    def __init__(self, client: Any, key_file: str, api_access_endpoint: str | None = None) -> None:
        self._client = client
        self._credentials = service_account.Credentials.from_service_account_file(key_file)
        # Against fake-gcs-server the URL must point at the emulator's public host.
        self._endpoint = api_access_endpoint or os.environ.get("STORAGE_EMULATOR_HOST") or None

    def sign_get(self, bucket: str, name: str, ttl_s: int) -> str:
        kwargs: dict[str, Any] = {}
        if self._endpoint:
            kwargs["api_access_endpoint"] = self._endpoint
        url: str = (
            self._client.bucket(bucket)
            .blob(name)
            .generate_signed_url(
                version="v4",
                expiration=timedelta(seconds=ttl_s),
                method="GET",
                credentials=self._credentials,
                **kwargs,
            )
        )
        return url


class IamUrlSigner:
    """Key-less V4 signing in the cloud: the IAM signBlob API with the runtime's token.

    The service account needs roles/iam.serviceAccountTokenCreator on itself.
    """

    def __init__(
        self,
        client: Any,
        credentials: Any,
        service_account_email: str | None = None,
        request_factory: Any = None,
    ) -> None:
        self._client = client
        self._credentials = credentials
        self._email = service_account_email
        self._request_factory = request_factory

    def _fresh_token(self) -> str:
        if not self._credentials.valid or not self._credentials.token:
            self._credentials.refresh(self._auth_request())
        token: str = self._credentials.token
        return token

    def _auth_request(self) -> Any:
        if self._request_factory is not None:
            return self._request_factory()
        from google.auth.transport.requests import Request

        return Request()

    def sign_get(self, bucket: str, name: str, ttl_s: int) -> str:
        token = self._fresh_token()
        email = self._email or self._credentials.service_account_email
        url: str = (
            self._client.bucket(bucket)
            .blob(name)
            .generate_signed_url(
                version="v4",
                expiration=timedelta(seconds=ttl_s),
                method="GET",
                service_account_email=email,
                access_token=token,
            )
        )
        return url
