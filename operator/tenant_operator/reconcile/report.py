"""The tenant's status as the phases report it: written only when it differs, told in events.

The status is applied whole with the operator's field manager, so a field left
out (the migration record once a migration ends) is removed from the object.
Each write answers with a new view of the tenant: the resourceVersion the next
fenced write is made over.
"""

from __future__ import annotations

from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from tenant_operator.api import conditions as cond
from tenant_operator.api import names
from tenant_operator.api.conditions import Condition
from tenant_operator.api.kinds import TENANT
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.infra import connection, metrics, postgres
from tenant_operator.infra import usage as usage_of
from tenant_operator.infra.usage import DataUsage
from tenant_operator.reconcile.context import Context
from tenant_operator.reconcile.state import recorded


class Superseded(Exception):
    """A status write fenced by resourceVersion met a newer Tenant: this view of it is stale."""


def report(ctx: Context, tenant: Tenant, updates: list[Condition], phase: str, tier: str | None,
           migration_status: dict[str, Any] | None = None, fenced: bool = False,
           schema_record: dict[str, Any] | None = None, quota_status: dict[str, Any] | None = None,
           max_bytes: int | None = -1) -> Tenant:
    """Write status only when it differs; post an event per condition that changed.

    `fenced` (a migration's writes): only over the tenant's resourceVersion, else Superseded.
    `schema_record`: the application schema's fields of status.database (else kept as they are).
    `quota_status`: the ResourceQuota's status as just read, for status.usage (else kept as it is);
    `max_bytes`: the tenant's maxSize (None: it has none), for its share in status.usage; -1 (unknown
    here, as in a migration's or a schema turn's report): as it stands.
    """
    current = tenant.status_json()
    merged = cond.merge(current.get("conditions", []), updates, tenant.generation, cond.now())
    status: dict[str, Any] = {
        "phase": phase,
        "namespace": names.tenant_namespace(tenant.name),
        "observedGeneration": tenant.generation,
        "conditions": merged,
    }
    if tier:
        placement = postgres.placement(tenant.name, tier, ctx.settings.shared_database)
        host, port = ctx.server.endpoint
        status["tier"] = tier
        status["database"] = {"server": ctx.server.name, "host": host, "port": port, "database": placement.database,
                              "schema": placement.schema, "secretName": names.DB_SECRET_NAME,
                              **(recorded(tenant) if schema_record is None else schema_record)}
    if migration_status:
        status["migration"] = migration_status
    measured = ctx.usage(ctx.server.name, names.sql_name(tenant.name))
    if measured is None and tier and "databaseBytes" not in (current.get("usage") or {}) and quota_status is not None:
        measured = _first_measurement(ctx, tenant, tier)
    usage = usage_status(current.get("usage"), measured, quota_status, max_bytes)
    if usage:
        status["usage"] = usage
        _track_usage(tenant.name, usage, measured)
    metrics.track_tenant(tenant.name, phase, tier, render.value(tenant.spec.plan))
    if all(current.get(key) == value for key, value in status.items()) and (
            "migration" in status or "migration" not in current):
        return tenant
    written = write_status(ctx, tenant, status, fenced)
    known = {c["type"] for c in current.get("conditions", [])}
    for changed in cond.transitions(current.get("conditions", []), merged):
        if changed["type"] in cond.ABNORMAL_WHEN_TRUE and (changed["status"] == "True" or changed["type"] not in known):
            continue  # told by the step that acted (StorageExceeded: storage.py), not again here
        if changed["type"] == cond.READY or changed["status"] != "True":
            ctx.events.post(written, changed["reason"], f"{changed['type']}: {changed['message']}",
                            warning=cond.deserves_warning(changed))
    return written


def write_status(ctx: Context, tenant: Tenant, status: dict[str, Any], fenced: bool = False) -> Tenant:
    """Apply the whole status; the view after it. `fenced`: only over the tenant's resourceVersion."""
    try:
        written = ctx.kube.apply_status(TENANT, tenant.name, status,
                                        resource_version=tenant.resource_version if fenced else None)
    except ApiException as error:
        if fenced and error.status == 409:
            raise Superseded(f"tenant {tenant.name} changed since resourceVersion {tenant.resource_version}") \
                from None
        raise
    version = ((written or {}).get("metadata") or {}).get("resourceVersion")
    ctx.wrote(tenant.name, version)
    return tenant.with_status(status, version)


# The quota resources status.usage tells (those the plan sets of them): what a dashboard compares.
USAGE_RESOURCES = ("pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "requests.storage",
                   "persistentvolumeclaims", "services")


_UNCHANGED = -1
# status.usage.databaseBytes is written again when it moved by this much (or 1%): an idle tenant's
# size still drifts by kilobytes (autovacuum's visibility and free space maps, catalog churn), and a
# status write per tenant per resync for that would be the writes an idle fleet must not make.
# The metric tenant_database_bytes is exact at every resync; maxSize is checked on a fresh measurement.
BYTES_STEP = 1024 * 1024


def usage_status(current: dict[str, Any] | None, data: DataUsage | None,
                 quota_status: dict[str, Any] | None, max_bytes: int | None = _UNCHANGED) -> dict[str, Any]:
    """status.usage: what was measured now over what the last resync measured.

    `max_bytes`: the maxSize now (None: the tenant has none), or _UNCHANGED (not known here).
    """
    usage = dict(current or {})
    if data is not None:
        told = usage.get("databaseBytes")
        if told is None or abs(data.bytes - told) >= max(BYTES_STEP, told // 100):
            usage["databaseBytes"] = data.bytes
        usage["connections"] = data.connections
    if max_bytes != _UNCHANGED:
        usage.pop("maxSizeBytes", None)
        usage.pop("maxSizeShare", None)
        if max_bytes:
            usage["maxSizeBytes"] = max_bytes
    if usage.get("maxSizeBytes") and usage.get("databaseBytes") is not None:
        usage["maxSizeShare"] = f"{100 * usage['databaseBytes'] // usage['maxSizeBytes']}%"
    if quota_status is not None:
        hard, used = quota_status.get("hard") or {}, quota_status.get("used") or {}
        usage["quota"] = {resource: {"used": str(used.get(resource, "0")), "hard": str(hard[resource])}
                          for resource in USAGE_RESOURCES if resource in hard}
    return usage


def _first_measurement(ctx: Context, tenant: Tenant, tier: str) -> DataUsage | None:
    """The tenant's usage at birth (or its first reconcile after an upgrade): its status is whole from
    the start, rather than gaining usage at the first resync, a write of its own."""
    if not ctx.leading():
        return None  # a process that paused and woke deposed opens no session
    placement = postgres.placement(tenant.name, tier, ctx.settings.shared_database)
    try:
        return usage_of.measure_one(ctx.server.admin_dsn(), placement.schema,
                                    placement.database if tier == postgres.ISOLATED else None, placement.role)
    except connection.DatabaseUnavailable:
        return None


def _track_usage(name: str, usage: dict[str, Any], measured: DataUsage | None) -> None:
    ratios = {}
    for resource, counted in (usage.get("quota") or {}).items():
        try:
            hard = parse_quantity(counted["hard"])
            ratios[resource] = float(parse_quantity(counted["used"]) / hard) if hard else 0.0
        except (ValueError, ArithmeticError):
            continue  # a quantity the client library cannot read: no ratio rather than a wrong one
    metrics.track_usage(name, measured.bytes if measured else usage.get("databaseBytes"),
                        measured.connections if measured else usage.get("connections"), ratios)


def summary(parts: list[Condition], tenant: Tenant, tier: str) -> Condition:
    """Ready, which also needs the tenant to live on the tier its spec asks for."""
    wanted = render.value(tenant.spec.tier)
    if all(p.ok for p in parts) and wanted != tier:
        return Condition(cond.READY, False, "TierMismatch",
                         f"spec.tier is {wanted} but the tenant lives on {tier}: see condition Migrating")
    return cond.summary(parts)


def phase(parts: list[Condition], tenant: Tenant, tier: str) -> str:
    if all(p.ok for p in parts) and render.value(tenant.spec.tier) != tier:
        return "Degraded"
    if all(p.ok for p in parts):
        return "Suspended" if tenant.spec.suspended else "Ready"
    if render.value(tenant.status.phase) in ("Ready", "Degraded", "Suspended"):
        return "Degraded"
    return "Provisioning"
