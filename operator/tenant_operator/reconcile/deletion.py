"""Deletion of a tenant under its reclaim policy, behind the operator's finalizer.

Order matters: the shared routing entry goes first, so the shared workload stops
serving a tenant that is being taken apart; the data is dealt with next; the
namespace last; the finalizer is removed only when all of that is done. Each
pass is idempotent, so an operator that dies anywhere in it finishes the job
after its restart.

- Retain: the schema or database and the role stay; the role loses LOGIN (its
  sessions are ended). A Tenant re-created under the same name adopts them.
- Snapshot: logins are blocked, pg_dump writes the data to the snapshot
  directory, and only once `pg_restore --list` has read every table back is it
  dropped as by Delete. A failed dump drops nothing and is retried with backoff.
- Delete: the schema or database, quarantined copies a tier migration left
  behind, and the role are dropped.

While a tier migration runs the data may live in two places: deletion first
brings it to a safe point (`moves.settle_for_deletion`): before the switch
the target is dropped and the data stays on the source; from the switch on the
source is quarantined as the migration's retire step would.

The status says phase Deleting with a Ready condition whose reason a script can
match (WaitingForMigration, SnapshotInProgress, SnapshotFailed,
DatabaseUnavailable, ReclaimFailed, DataRetained, SnapshotTaken, DataDeleted) and whose
message says where the data is; each change of it is an event on the Tenant,
which outlives the Tenant object for the API server's event TTL.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging

import psycopg
from kubernetes.client.exceptions import ApiException

from tenant_operator.api import conditions as cond
from tenant_operator.api import names
from tenant_operator.api.conditions import Condition
from tenant_operator.api.kinds import KINDS, TENANT, ObjectRef
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.infra import access, connection, metrics, postgres, snapshot, tierdata
from tenant_operator.infra.fence import Deposed
from tenant_operator.infra.servers import ServerUnusable
from tenant_operator.infra.tenantlock import LockBusy
from tenant_operator.reconcile import moves
from tenant_operator.reconcile.context import Context, Outcome
from tenant_operator.reconcile.placement import home_of
from tenant_operator.reconcile.report import write_status
from tenant_operator.reconcile.state import LOCK_BUSY_RETRY, safe_to_delete, tier_of

log = logging.getLogger(__name__)

NAMESPACE_GONE_POLL = 2.0
DELETING = "Deleting"
FAILURE_REASONS = ("SnapshotFailed", "DatabaseUnavailable", "ReclaimFailed")
CLOCK_SKEW_MARGIN = datetime.timedelta(minutes=10)


@dataclasses.dataclass(frozen=True)
class Reclaimed:
    """What the reclaim policy did to the data, as the Ready condition tells it."""

    reason: str
    message: str


def finalize(ctx: Context, tenant: Tenant) -> Outcome:
    """One pass of the deletion; long because it is the one place mapping each failure to its condition."""
    if names.FINALIZER not in tenant.finalizers:
        return Outcome()
    policy = render.value(tenant.spec.database.reclaim_policy)
    _remove_route(ctx, tenant.name)
    try:
        if not safe_to_delete(tenant):
            step = tenant.status.migration.step if tenant.status.migration else "unknown"
            tenant = _report(ctx, tenant, "WaitingForMigration",
                             f"deletion brings the tier migration (step {step}) to a safe point first; "
                             "nothing was removed yet")
            tenant = moves.settle_for_deletion(ctx, tenant)
        tier = tier_of(tenant) or render.value(tenant.spec.tier)
        placement = postgres.placement(tenant.name, tier, ctx.settings.shared_database)
        home = home_of(tenant)
        if home is not None:
            ctx = ctx.on(ctx.servers.get(home))
        tenant, reclaimed = RECLAIM[policy](ctx, tenant, placement)
    except ServerUnusable as error:
        log.warning("tenant %s: cannot reach its DatabaseServer to finalize: %s", tenant.name, error)
        _report(ctx, tenant, "DatabaseUnavailable",
                f"reclaimPolicy {policy}: {error}; the namespace stays until the data is dealt with, retrying",
                warning=True)
        return Outcome(failed=True)
    except LockBusy as busy:
        log.info("tenant %s: deletion waits: %s", tenant.name, busy)
        return Outcome(requeue_after=LOCK_BUSY_RETRY)
    except Deposed as deposed:
        log.warning("tenant %s: deletion stops here: %s", tenant.name, deposed)
        return Outcome()
    except connection.DatabaseUnavailable as error:
        log.warning("tenant %s: cannot reach PostgreSQL to finalize: %s", tenant.name, error)
        _report(ctx, tenant, "DatabaseUnavailable",
                f"reclaimPolicy {policy}: {error}; the namespace stays until the data is dealt with, retrying",
                warning=True)
        return Outcome(failed=True)
    except snapshot.SnapshotFailed as error:
        log.warning("tenant %s: snapshot failed, nothing dropped: %s", tenant.name, error)
        _report(ctx, tenant, "SnapshotFailed",
                f"reclaimPolicy Snapshot: {error}; nothing was dropped, retrying", warning=True)
        return Outcome(failed=True)
    except psycopg.Error as error:
        # e.g. DROP ROLE refused because the role still owns objects somewhere else.
        detail = " ".join(str(error).split())
        log.warning("tenant %s: reclaimPolicy %s failed: %s", tenant.name, policy, detail)
        _report(ctx, tenant, "ReclaimFailed", f"reclaimPolicy {policy}: {detail}; retrying", warning=True)
        return Outcome(failed=True)

    namespace = ObjectRef(KINDS[("v1", "Namespace")], names.tenant_namespace(tenant.name))
    current = ctx.kube.read(namespace)
    if current is not None:
        tenant = _report(ctx, tenant, reclaimed.reason,
                         f"{reclaimed.message}; namespace {namespace.name} is being deleted")
        if not current["metadata"].get("deletionTimestamp"):
            if ctx.access is not None:
                # A namespace made before per-namespace grants (an upgrade) is bound by the grants process.
                try:
                    access.wait_until_granted(ctx.kube, ctx.access, namespace.name, ctx.access.tenant_role)
                except access.AccessPending as pending:
                    _report(ctx, tenant, "AccessPending", f"{pending}; the namespace stays, retrying", warning=True)
                    return Outcome(failed=True)
            ctx.kube.delete(namespace)
        return Outcome(requeue_after=NAMESPACE_GONE_POLL)
    told = tenant.status.condition(cond.READY)
    if told is None or told.reason != reclaimed.reason:
        # The namespace was gone already (never made, or removed by hand): the event still tells where the data is.
        tenant = _report(ctx, tenant, reclaimed.reason, reclaimed.message)
    return _remove_finalizer(ctx, tenant)


def where(placement: postgres.DataPlacement) -> str:
    """The tenant's data in words: `schema tenant_a in database tenants` or `database tenant_a`."""
    if placement.tier == postgres.ISOLATED:
        return f"database {placement.database}"
    return f"schema {placement.schema} in database {placement.database}"


def _retain(ctx: Context, tenant: Tenant, placement: postgres.DataPlacement) -> tuple[Tenant, Reclaimed]:
    dsn = ctx.server.admin_dsn()
    if not postgres.tenant_data_exists(dsn, placement):
        return tenant, Reclaimed("DataRetained",
                                 f"reclaimPolicy Retain: no data to keep ({where(placement)} does not exist)")
    try:
        if postgres.set_login(dsn, placement.role, False):
            metrics.count_write("postgres")
        role = f"role {placement.role} cannot log in"
    except postgres.RoleMissing:
        role = f"role {placement.role} does not exist"
    message = (f"reclaimPolicy Retain: {where(placement)} kept; {role}; "
               f"a Tenant created again as {tenant.name} adopts it")
    return tenant, Reclaimed("DataRetained", message)


def _delete(ctx: Context, tenant: Tenant, placement: postgres.DataPlacement) -> tuple[Tenant, Reclaimed]:
    dsn = ctx.server.admin_dsn()
    dropped = _drop_quarantined_copies(ctx, tenant.name)
    result = postgres.drop_tenant_data(dsn, placement)
    dropped += _drop_elsewhere(ctx, tenant.name)
    metrics.count_write("postgres", len(result.actions))
    if result.changed or dropped:
        log.info("tenant %s: reclaimPolicy Delete: %s", tenant.name, "; ".join([*result.actions, *dropped]))
    return tenant, Reclaimed("DataDeleted",
                             f"reclaimPolicy Delete: {where(placement)} and role {placement.role} dropped")


def _snapshot(ctx: Context, tenant: Tenant, placement: postgres.DataPlacement) -> tuple[Tenant, Reclaimed]:
    dsn = ctx.server.admin_dsn()
    if postgres.tenant_data_exists(dsn, placement):
        previous = tenant.status.condition(cond.READY)
        if previous is None or previous.reason != "SnapshotFailed":  # while retrying, the failure stays in view
            tenant = _report(ctx, tenant, "SnapshotInProgress",
                             f"reclaimPolicy Snapshot: dumping {where(placement)} to {ctx.settings.snapshot_dir}; "
                             "logins blocked")
        try:
            if postgres.set_login(dsn, placement.role, False):  # nothing changes under the dump
                metrics.count_write("postgres")
        except postgres.RoleMissing:
            pass
        tables = postgres.snapshot_tables(dsn, placement)
        made = snapshot.take_snapshot(dsn, placement, tenant.name, tables, ctx.settings.snapshot_dir,
                                      ctx.settings.pg_bin_dir, ctx.settings.snapshot_timeout_seconds)
        log.info("tenant %s: snapshot of %s (%d tables) written to %s", tenant.name, where(placement),
                 made.tables, made.describe())
        taken: snapshot.Snapshot | None = made
    else:
        # Dumped and dropped in an earlier pass (the operator may have died before the namespace went).
        taken = snapshot.latest_snapshot(ctx.settings.snapshot_dir, tenant.name, _deletion_time(tenant))
    _delete(ctx, tenant, placement)
    if taken is None:
        return tenant, Reclaimed("DataDeleted", f"reclaimPolicy Snapshot: nothing to dump ({where(placement)} does "
                                                f"not exist); role {placement.role} dropped")
    return tenant, Reclaimed("SnapshotTaken", f"reclaimPolicy Snapshot: {where(placement)} dumped to "
                                              f"{taken.describe()}; then dropped with role {placement.role}")


def _deletion_time(tenant: Tenant) -> datetime.datetime | None:
    """When the deletion began, less a margin for the API server's clock running ahead of ours."""
    stamp = tenant.deletion_timestamp
    if not stamp:
        return None
    began = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    return began - CLOCK_SKEW_MARGIN


RECLAIM = {"Retain": _retain, "Delete": _delete, "Snapshot": _snapshot}


def _drop_quarantined_copies(ctx: Context, tenant_name: str) -> list[str]:
    """Copies a finished tier migration keeps for a while: the tenant's data too, and owned by its
    role (DROP ROLE would refuse while they exist)."""
    dsn, shared = ctx.server.admin_dsn(), ctx.settings.shared_database
    dropped = []
    for kind, name in tierdata.expired_quarantines(dsn, shared, names.sql_name(tenant_name), retention=0):
        tierdata.drop_quarantine(dsn, shared, kind, name)
        metrics.count_write("postgres")
        dropped.append(f"dropped quarantined {kind} {name}")
    return dropped


def _drop_elsewhere(ctx: Context, tenant_name: str) -> list[str]:
    """What moves between servers left on the servers the tenant lived on before: quarantined copies
    and a role that may not log in. A server out of reach keeps them (told in the log)."""
    done = []
    shared = postgres.placement(tenant_name, postgres.SHARED, ctx.settings.shared_database)
    for name in ctx.servers.names():
        if name == ctx.server.name:
            continue
        try:
            other = ctx.on(ctx.servers.get(name))
            if not ctx.health.of(other.server).ok:
                raise ServerUnusable("Unreachable", f"DatabaseServer {name} is not Ready")
            dropped = _drop_quarantined_copies(other, tenant_name)
            if postgres.role_exists(other.server.admin_dsn(), shared.role):
                dropped += [f"{action} on {name}" for action in postgres.drop_tenant_data(
                    other.server.admin_dsn(), shared).actions]
            done += dropped
        except (ServerUnusable, connection.DatabaseUnavailable) as error:
            log.warning("tenant %s: what earlier moves left on DatabaseServer %s stays: %s", tenant_name, name, error)
    return done


def _remove_route(ctx: Context, tenant_name: str) -> None:
    routes = render.routes_ref(ctx.settings)
    if tenant_name in ((ctx.kube.read(routes) or {}).get("data") or {}):
        ctx.kube.merge_patch(routes, {"data": {tenant_name: None}})


def _remove_finalizer(ctx: Context, tenant: Tenant) -> Outcome:
    finalizers = [f for f in tenant.finalizers if f != names.FINALIZER]
    try:
        ctx.kube.merge_patch(ObjectRef(TENANT, tenant.name),
                             {"metadata": {"finalizers": finalizers, "resourceVersion": tenant.resource_version}})
    except ApiException as error:
        if error.status not in (404, 409):
            raise
        return Outcome(requeue_after=0.5 if error.status == 409 else None)
    log.info("tenant %s: deleted", tenant.name)
    return Outcome()


def _report(ctx: Context, tenant: Tenant, reason: str, message: str, warning: bool = False) -> Tenant:
    """Phase Deleting and the Ready condition; written, and told in an event, only when they change.

    The status is applied whole (as the API server has it, with phase and
    conditions replaced) under the operator's field manager, as reconcile does,
    so no field the operator owns, such as status.migration, is dropped.
    """
    current = tenant.status_json()
    before = tenant.status.condition(cond.READY)
    update = Condition(cond.READY, False, reason, message)
    merged = cond.merge(current.get("conditions", []), [update], tenant.generation, cond.now())
    status = {**current, "phase": DELETING, "observedGeneration": tenant.generation, "conditions": merged}
    metrics.track_tenant(tenant.name, DELETING, tier_of(tenant), tenant.spec.plan)
    if status == current:
        return tenant
    written = write_status(ctx, tenant, status)
    if before is None or (before.reason, before.message) != (reason, message):
        ctx.events.post(written, reason, message, warning=warning or reason in FAILURE_REASONS)
    return written
