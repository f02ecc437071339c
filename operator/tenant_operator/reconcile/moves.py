"""What every move of a tenant's data shares: its two servers, who may act, how it is told, how a deletion settles it.

A move leaves (server, tier) for (server, tier). The tenant's PostgreSQL lock is
taken on the server it leaves, the one it lived on when the move began, for the
whole move: every process that looks at the same record takes the same lock.
"""

from __future__ import annotations

import contextlib
import datetime

import psycopg

from tenant_operator.api import conditions as cond
from tenant_operator.api import names
from tenant_operator.api.conditions import Condition
from tenant_operator.api.kinds import KINDS, TENANT, ObjectRef
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra import connection, fence, metrics, postgres, servers, tierdata
from tenant_operator.infra.fence import Authority, Deposed
from tenant_operator.infra.servers import Server
from tenant_operator.reconcile import online, placement
from tenant_operator.reconcile.context import Context
from tenant_operator.reconcile.report import report
from tenant_operator.reconcile.state import ROLLBACK_STEPS, secret_password


def epoch(timestamp: str) -> float:
    return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC).timestamp()


def authority_over(ctx: Context, tenant_name: str) -> contextlib.AbstractContextManager[Authority]:
    """On the server the move leaves (`ctx.server`): where the tenant lived when the move began."""
    return fence.authority_over(ctx.server.admin_dsn(), tenant_name, ctx.leading)


def source_server(ctx: Context, tenant: Tenant) -> Server:
    """The server the move leaves: the record's, else where the tenant lives (ServerUnusable if unknown)."""
    record = tenant.migration_record()
    return ctx.servers.get(record.get("fromServer") or placement.home_of(tenant) or servers.DEFAULT)


def where(record: dict, side: str) -> str:
    """`shared` within a server (as before servers existed), `shared on pg-2` for a move between servers."""
    other = "to" if side == "from" else "from"
    tier, server = record[side], record.get(f"{side}Server")
    return tier if server is None or server == record.get(f"{other}Server") else f"{tier} on {server}"


def shut_out(admin_dsn: str, role: str) -> None:
    """The tenant's role on a server it does not live on: no login (it may own a quarantined copy there)."""
    try:
        postgres.set_login(admin_dsn, role, False)
    except postgres.RoleMissing:
        pass


def settle_for_deletion(ctx: Context, tenant: Tenant) -> Tenant:
    """A migrating tenant is being deleted: leave its data in one place, then clear the record.

    Before the switch the source is still the tenant's home: the target goes. From
    the switch on the target is: it loses its marker and the source is quarantined,
    as the switch would. Workloads, Secret and route are not touched; deletion removes
    them. Each part is idempotent; DatabaseUnavailable leaves the record for a retry.
    Raises LockBusy while another process holds the tenant, Deposed when we may not act.
    The answer is the tenant as written: its tier is where the data stays.
    """
    record = tenant.migration_record()
    source = postgres.placement(tenant.name, record["from"], ctx.settings.shared_database)
    target = postgres.placement(tenant.name, record["to"], ctx.settings.shared_database)
    ctx = ctx.on(source_server(ctx, tenant))
    target_ctx = ctx.on(ctx.servers.get(record.get("toServer") or ctx.server.name))
    across = target_ctx.server.name != ctx.server.name
    with authority_over(ctx, tenant.name) as authority:
        authority.check("settle the migration for the deletion")
        if record.get("mode") == "online":
            # Before anything else: a slot left behind keeps the source's WAL until its disk fills.
            online.drop(online.Sides(ctx.server.admin_dsn(), target_ctx.server.admin_dsn(), source, target))
        if record["step"] in ROLLBACK_STEPS:
            if across:
                with connection.admin_session(target_ctx.server.admin_dsn()) as session:
                    authority.check("remove the target on the other server")
                    tierdata.drop_target(session, tenant.name, target)
            else:
                tierdata.drop_target(authority.lock.session, tenant.name, target)
            home, tier = ctx, record["from"]
            message = f"stopped before the switch; the data stays on {where(record, 'from')}"
            metrics.MIGRATIONS.labels("cancelled").inc()
        else:
            name = tierdata.quarantine_name(source, epoch(record["started"]))
            tierdata.quarantine(authority.lock.session, source, name)
            tierdata.unmark(target_ctx.server.admin_dsn(), target)
            home, tier = target_ctx, record["to"]
            message = f"finished after the switch; the {where(record, 'from')} copy is kept as {name}"
            metrics.MIGRATIONS.labels("succeeded").inc()
        message = f"the Tenant is being deleted: migration to {where(record, 'to')} {message}"
        # Written without the record: the status is applied whole, so status.migration goes.
        tenant = report(home, tenant, [Condition(cond.MIGRATING, False, "MigrationSettled", message)],
                        phase="Deleting", tier=tier, fenced=True)
    ctx.events.post(tenant, "MigrationSettled", message)
    return tenant


def reload(ctx: Context, tenant: Tenant, expected: tuple[str | None, str | None] | None) -> Tenant | None:
    """The Tenant as the API server has it now; None when it is gone.

    `expected`: (started, step) of the migration record as this process last wrote it.
    Another record on the server means another process moved this migration on.
    """
    body = ctx.kube.read(ObjectRef(TENANT, tenant.name))
    if body is None:
        return None
    fresh = Tenant.from_body(body)
    if expected is not None:
        theirs = fresh.status.migration
        if (theirs.started if theirs else None, theirs.step if theirs else None) != expected:
            raise Deposed(f"the migration record changed under this process (step {theirs.step if theirs else None})")
    return fresh


def tenant_password(ctx: Context, tenant_name: str) -> str | None:
    return secret_password(ctx.kube.read(ObjectRef(KINDS[("v1", "Secret")], names.DB_SECRET_NAME,
                                                   names.tenant_namespace(tenant_name))))


def passing(error: Exception) -> bool:
    """A clash with a concurrent statement (two moves granting CONNECT on one database at once), not a
    problem of the move: the step is tried again, rather than the move rolled back for good."""
    return isinstance(error, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected |
                      psycopg.errors.LockNotAvailable) or (
        isinstance(error, psycopg.errors.InternalError) and "concurrently" in str(error))
