"""What a pass over every tenant reads once instead of once per tenant.

A resync, a restart or a new leader examines every tenant, and each examination
compares half a dozen objects with what the tenant wants. A Listing answers the
reads it can from one LIST per cluster-scoped kind the operator owns (its
namespaces, by label, in pages) and from one read of the shared routing table,
which every shared tenant's examination would otherwise fetch whole.

Only tenants at rest are examined this way (nothing changed in their spec, no
migration, no deletion): the desired state comes from the tenant itself, so an
entry that went stale since the LIST can cost one needless server-side apply of
the right state, never a wrong one. What a pass writes replaces its entry, so a
pass does not trip over its own writes. Entries are kept as JSON text, parsed
when read: a few thousand parsed objects would stay in the operator's memory
(its RSS) long after the pass that needed them. Namespaced kinds are not listed: the
operator's identity may read them only in the namespaces it manages (access.py), and a
LIST across the cluster is a read of every namespace.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any

from tenant_operator.api import names
from tenant_operator.api.kinds import KINDS, Kind, ObjectRef
from tenant_operator.infra.kube import Kube

LISTED: tuple[Kind, ...] = (KINDS[("v1", "Namespace")],)
"""Only what the operator may list cluster-wide: its rights on namespaced kinds hold in the
namespaces it manages, not in the cluster (access.py), so those are read one by one."""
SELECTOR = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY}"
PAGE_SIZE = 500
MAX_AGE_SECONDS = 60.0
"""An older listing is taken again: a long pass should not compare with minutes-old state."""


def _compact(body: dict) -> str:
    # managedFields are the bulk of every object and no comparison looks at them.
    meta = {key: value for key, value in body["metadata"].items() if key != "managedFields"}
    return json.dumps({**body, "metadata": meta}, separators=(",", ":"))


def _key(ref: ObjectRef) -> tuple[str, str | None, str]:
    return ref.kind.kind, ref.namespace if ref.kind.namespaced else None, ref.name


class ListedKube:
    """A Kube whose reads of listed kinds come from one LIST each; writes go through and update it."""

    def __init__(self, kube: Kube, objects: dict, shared: frozenset[ObjectRef] = frozenset()):
        self.kube = kube
        self.taken_at = time.monotonic()
        self._objects = objects
        self._shared = shared
        self._shared_bodies: dict[ObjectRef, dict | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def take(cls, kube: Kube, shared: frozenset[ObjectRef] = frozenset()) -> ListedKube:
        """List every kind in LISTED by the operator's label; `shared` objects are read once, when first asked."""
        objects = {}
        for kind in LISTED:
            for item in kube.list_pages(kind, SELECTOR, PAGE_SIZE):
                meta = item["metadata"]
                objects[(kind.kind, meta.get("namespace"), meta["name"])] = _compact(item)
        return cls(kube, objects, shared)

    def age(self) -> float:
        return time.monotonic() - self.taken_at

    def __len__(self) -> int:
        return len(self._objects)

    def read(self, ref: ObjectRef) -> dict | None:
        if ref.kind in LISTED:
            text = self._objects.get(_key(ref))
            return None if text is None else json.loads(text)
        if ref in self._shared:
            with self._lock:
                if ref not in self._shared_bodies:
                    self._shared_bodies[ref] = self.kube.read(ref)
                return self._shared_bodies[ref]
        return self.kube.read(ref)

    def apply(self, manifest: Mapping[str, Any], force: bool = True) -> dict:
        applied = self.kube.apply(manifest, force=force)
        self._remember(ObjectRef.of(manifest), applied)
        return applied

    def merge_patch(self, ref: ObjectRef, patch: Mapping[str, Any]) -> dict:
        patched = self.kube.merge_patch(ref, patch)
        self._remember(ref, patched)
        return patched

    def delete(self, ref: ObjectRef, propagation: str = "Background") -> bool:
        self._objects.pop(_key(ref), None)
        with self._lock:
            self._shared_bodies.pop(ref, None)
        return self.kube.delete(ref, propagation)

    def _remember(self, ref: ObjectRef, body: dict | None) -> None:
        if ref.kind in LISTED:
            self._objects[_key(ref)] = _compact(body) if body is not None else None
        elif ref in self._shared:
            with self._lock:
                # Another worker's patch may land between ours and its answer; the next read fetches.
                self._shared_bodies.pop(ref, None)

    def __getattr__(self, name: str):
        return getattr(self.kube, name)
