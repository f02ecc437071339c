"""DatabaseSchemas resolved into ordered migrations, shared by every reconcile for a few seconds.

A schema's versions may live in a ConfigMap: a thousand tenants reconciled in a
resync must not read it a thousand times, so a resolution is kept for
`seconds` per (name, generation). A problem (a missing ConfigMap, a bad key, a
version given twice) is resolved too: it becomes the tenants' SchemaReady and the
DatabaseSchema's condition, never an exception in a worker.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from tenant_operator.api.kinds import KINDS, ObjectRef
from tenant_operator.api.schema import DatabaseSchema, Migration, MigrationsProblem, ordered_migrations
from tenant_operator.infra.kube import KubeAPI

CONFIG_MAP = KINDS[("v1", "ConfigMap")]


@dataclasses.dataclass(frozen=True)
class Resolved:
    schema: DatabaseSchema
    migrations: tuple[Migration, ...] = ()
    problem: MigrationsProblem | None = None

    @property
    def latest(self) -> int | None:
        return self.migrations[-1].version if self.migrations else None


class SchemaCatalog:
    def __init__(self, kube: KubeAPI, body_of: Callable[[str], dict[str, Any] | None], seconds: float = 5.0):
        self.kube = kube
        self.body_of = body_of
        self.seconds = seconds
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, int, Resolved]] = {}

    def resolve(self, name: str) -> Resolved | None:
        """The schema and its versions in order (None: no DatabaseSchema of that name)."""
        body = self.body_of(name)
        if body is None:
            return None
        # Every reconcile of a tenant on the schema asks: the cached answer is checked before the
        # body (up to hundreds of migrations) is parsed again.
        generation = (body.get("metadata") or {}).get("generation") or 0
        with self._lock:
            kept = self._kept.get(name)
            if kept and kept[1] == generation and time.monotonic() - kept[0] < self.seconds:
                return kept[2]
        schema = DatabaseSchema.from_body(body)
        resolved = self._resolve(schema)
        with self._lock:
            self._kept[name] = (time.monotonic(), schema.generation, resolved)
        return resolved

    def forget(self, name: str) -> None:
        with self._lock:
            self._kept.pop(name, None)

    def _resolve(self, schema: DatabaseSchema) -> Resolved:
        data: dict[str, str] | None = None
        ref = schema.spec.migrations.config_map_ref
        if ref is not None:
            try:
                found = self.kube.read(ObjectRef(CONFIG_MAP, ref.name, ref.namespace))
            except ApiException as error:
                if error.status != 403:
                    raise
                return Resolved(schema, problem=MigrationsProblem(
                    "ConfigMapForbidden", f"the operator may not read ConfigMap {ref.namespace}/{ref.name}: keep "
                                          "migrations ConfigMaps in the operator's namespace"))
            if found is None:
                return Resolved(schema, problem=MigrationsProblem(
                    "ConfigMapNotFound", f"ConfigMap {ref.namespace}/{ref.name} does not exist"))
            data = found.get("data") or {}
        try:
            return Resolved(schema, tuple(ordered_migrations(schema.spec, data)))
        except MigrationsProblem as problem:
            return Resolved(schema, problem=problem)
