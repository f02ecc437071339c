"""What the controller reads off a Tenant's watch body: whether it changed for a reconcile, whether it is at rest."""

from __future__ import annotations

from tenant_operator.api import names

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
