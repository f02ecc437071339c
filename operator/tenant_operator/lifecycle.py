"""Deletion of a tenant under its reclaim policy, behind the operator's finalizer.

Order matters: the shared routing entry goes first, so the shared workload stops
serving a tenant that is being taken apart; the data is dealt with next; the
namespace last; the finalizer is removed only when all of that is done.
Nothing is dropped unless the policy says Delete.
"""

from __future__ import annotations

import logging

from kubernetes.client.exceptions import ApiException

from tenant_operator import events, names, postgres, render
from tenant_operator.kube import KINDS, TENANT, ObjectRef

log = logging.getLogger(__name__)

NAMESPACE_GONE_POLL = 2.0


def finalize(ctx, body: dict, tenant):
    from tenant_operator.reconcile import Outcome

    meta = body["metadata"]
    if names.FINALIZER not in (meta.get("finalizers") or []):
        return Outcome()
    status = body.get("status") or {}
    tier = status.get("tier") or render.value(tenant.spec.tier)
    policy = render.value(tenant.spec.database.reclaim_policy)
    placement = postgres.placement(tenant.name, tier, ctx.settings.shared_database)

    routes = ObjectRef(KINDS[("v1", "ConfigMap")], render.ROUTES_CONFIGMAP, ctx.settings.shared_namespace)
    if tenant.name in ((ctx.kube.read(routes) or {}).get("data") or {}):
        ctx.kube.merge_patch(routes, {"data": {tenant.name: None}})

    dsn = ctx.settings.admin_dsn()
    try:
        if policy == "Delete":
            result = postgres.drop_tenant_data(dsn, placement)
            if result.changed:
                events.post(ctx.kube, body, "DataDeleted", f"reclaimPolicy Delete: {'; '.join(result.actions)}")
        elif postgres.tenant_data_exists(dsn, placement):
            if postgres.set_login(dsn, placement.role, False):
                note = " (Snapshot is not available in this version: the data was retained)" if policy == "Snapshot" else ""
                events.post(ctx.kube, body, "DataRetained",
                            f"schema {placement.schema} in database {placement.database} kept, "
                            f"role {placement.role} cannot log in{note}")
    except postgres.DatabaseUnavailable as error:
        log.warning("tenant %s: cannot reach PostgreSQL to finalize: %s", tenant.name, error)
        return Outcome(failed=True)
    except postgres.RoleMissing:
        pass

    namespace = ObjectRef(KINDS[("v1", "Namespace")], names.tenant_namespace(tenant.name))
    current = ctx.kube.read(namespace)
    if current is not None:
        if not current["metadata"].get("deletionTimestamp"):
            ctx.kube.delete(namespace)
        return Outcome(requeue_after=NAMESPACE_GONE_POLL)

    finalizers = [f for f in meta.get("finalizers", []) if f != names.FINALIZER]
    try:
        ctx.kube.merge_patch(ObjectRef(TENANT, meta["name"]),
                             {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}})
    except ApiException as error:
        if error.status not in (404, 409):
            raise
        return Outcome(requeue_after=0.5 if error.status == 409 else None)
    return Outcome()
