"""What the controller reads off a Tenant's watch body: whether it changed for a reconcile, whether it is at rest."""

from __future__ import annotations

import threading
import time

from tenant_operator.api import names

# The watch brings our own write back within a moment; past this, a view is trusted anyway (a write
# whose event the watch folded into a later one must not hold its tenant back for ever).
OWN_WRITE_SECONDS = 5.0

# What a person or another controller changes on a Tenant. A change of status alone is
# the operator's own write coming back through the watch: reconciling it again would only
# read every object to find nothing to do (resync still looks at every tenant).
_WATCHED_METADATA = ("generation", "deletionTimestamp", "annotations", "labels")


def at_rest(body: dict) -> bool:
    """Reconciled at its current spec, not migrating, not being deleted: examined from a listing."""
    status = body.get("status") or {}
    meta = body["metadata"]
    return (not meta.get("deletionTimestamp") and not status.get("migration")
            and "observedGeneration" in status and status["observedGeneration"] == meta.get("generation"))


def asks_for_reconcile(previous: dict, current: dict) -> bool:
    before, after = previous.get("metadata") or {}, current.get("metadata") or {}
    if any(before.get(key) != after.get(key) for key in _WATCHED_METADATA):
        return True
    # Of the finalizers only ours matters, and only its absence: adding it is our own first
    # write of every new tenant, and reconciling on its echo would read the whole tenant again.
    return names.FINALIZER not in (after.get("finalizers") or [])


class OwnWrites:
    """The resourceVersion of each tenant's last status write, until the watch brings a view that has it.

    A reconcile acts on the cached body: one that started before the cache caught up with the
    previous reconcile's write would take that write back (a failed version's record, say, gone
    from the status while the rollout still counts the failure). So it waits for the view.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._awaited: dict[str, tuple[int, float]] = {}

    def wrote(self, tenant: str, resource_version: str | None) -> None:
        if resource_version and resource_version.isdigit():
            with self._lock:
                self._awaited[tenant] = (int(resource_version), time.monotonic())

    def seen(self, tenant: str, body: dict) -> None:
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        with self._lock:
            awaited = self._awaited.get(tenant)
            if awaited and (not version.isdigit() or int(version) >= awaited[0]):
                del self._awaited[tenant]

    def behind(self, tenant: str) -> bool:
        """Whether the cache has not yet seen this process's last write of the tenant's status."""
        with self._lock:
            awaited = self._awaited.get(tenant)
            if awaited and time.monotonic() - awaited[1] > OWN_WRITE_SECONDS:
                del self._awaited[tenant]
                return False
            return awaited is not None
