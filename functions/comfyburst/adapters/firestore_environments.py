"""EnvironmentStore port over google-cloud-firestore: `environments/{id}` documents and
`environment_access/{hash}` records of which caller asked for which environment."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Protocol

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from comfyburst.adapters._firestore_docs import convert, from_doc, to_doc
from comfyburst.domain.environments import Environment


class EnvironmentCollections(Protocol):
    """The collection names the store needs (FunctionSettings has them)."""

    @property
    def environments_collection(self) -> str: ...
    @property
    def environment_access_collection(self) -> str: ...


def access_doc_id(caller: str | None, environment_id: str) -> str:
    """One record per (caller, environment): a hash, since principals may hold any character."""
    return hashlib.sha256(json.dumps([caller, environment_id]).encode()).hexdigest()


class FirestoreEnvironmentStore:
    """Environments and access records; the access record's `asked_at` orders `list_for`."""

    def __init__(self, client: firestore.Client, settings: EnvironmentCollections) -> None:
        self._client = client
        self._envs = client.collection(settings.environments_collection)
        self._access = client.collection(settings.environment_access_collection)

    def create(self, env: Environment, caller: str | None) -> tuple[Environment, bool]:
        ref = self._envs.document(env.environment_id)
        access = self._access.document(access_doc_id(caller, env.environment_id))
        record = convert(
            {"caller": caller, "environment_id": env.environment_id, "asked_at": env.created_at}
        )
        # The document and the caller's record in one commit; when the environment exists
        # the whole batch is refused, and the record alone is written (idempotent).
        batch = self._client.batch()
        batch.create(ref, to_doc(env))
        batch.set(access, record)
        try:
            batch.commit()
        except gexc.AlreadyExists:
            access.set(record)
            stored = self.get(env.environment_id)
            if stored is None:  # environments are never deleted in this layer
                raise
            return stored, False
        return env, True

    def get(self, environment_id: str) -> Environment | None:
        snap = self._envs.document(environment_id).get()
        return from_doc(Environment, snap.to_dict()) if snap.exists else None

    def list_for(self, caller: str | None, limit: int) -> list[Environment]:
        # Served by the (caller, asked_at desc) index in terraform/firestore.tf.
        query = (
            self._access.where(filter=FieldFilter("caller", "==", caller))
            .order_by("asked_at", direction=firestore.Query.DESCENDING)
            .limit(limit)
        )
        ids = [str((snap.to_dict() or {}).get("environment_id")) for snap in query.stream()]
        if not ids:
            return []
        found: dict[str, Environment] = {}
        for snap in self._client.get_all([self._envs.document(i) for i in ids]):
            if snap.exists:
                env = from_doc(Environment, snap.to_dict())
                found[env.environment_id] = env
        return [found[i] for i in ids if i in found]

    def asked_by(self, caller: str | None, environment_id: str) -> bool:
        return bool(self._access.document(access_doc_id(caller, environment_id)).get().exists)

    def count_for(self, caller: str | None) -> int:
        """One aggregation query over the caller's access records (equality filter only)."""
        query: Any = self._access.where(filter=FieldFilter("caller", "==", caller))
        result = query.count(alias="n").get()
        return int(result[0][0].value)

    def update(
        self, environment_id: str, mutate: Callable[[Environment], Environment | None]
    ) -> Environment | None:
        ref = self._envs.document(environment_id)

        @firestore.transactional
        def run(transaction: firestore.Transaction) -> Environment | None:
            snap = ref.get(transaction=transaction)
            if not snap.exists:
                return None
            current = from_doc(Environment, snap.to_dict())
            updated = mutate(current)
            if updated is None:
                return current
            transaction.set(ref, to_doc(updated))
            return updated

        result: Environment | None = run(self._client.transaction())
        return result
