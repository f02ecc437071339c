"""maxSize: a tenant over it has its writes stopped, and back under it gets them back by itself.

Looked at by every reconcile of a tenant whose plan (or overrides) sets maxSize,
and of one still stopped: its size (one query), compared with the limit. Over
it, the stop is applied again each time (it does nothing when it is whole, and
repairs one that is not: infra/storage.py). While stopped, only tables with dead
rows are vacuumed first, so that rows the tenant deleted at a table's end count
at once and nothing else is rewritten at every look. When the tenant's locks keep
the stop (or the lift) from running, the condition says so with reason
StorageBusy and the reconcile retries with backoff. The mechanism, and why it
holds: infra/storage.py.
"""

from __future__ import annotations

from tenant_operator.api import conditions as cond
from tenant_operator.api import limits
from tenant_operator.api.conditions import Condition
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra import metrics, storage
from tenant_operator.infra.postgres import DataPlacement
from tenant_operator.reconcile.context import Context

BUSY = "StorageBusy"


def enforce(ctx: Context, tenant: Tenant, placement: DataPlacement, bounds: limits.DatabaseLimits,
            stopped: bool) -> Condition | None:
    """Stop or lift as the size says; the StorageExceeded condition (None: no maxSize, nothing stopped)."""
    limit = limits.max_bytes(bounds)
    if limit is None and not stopped:
        metrics.track_storage(tenant.name, None)
        return None
    try:
        over, where = _act(ctx, tenant, placement, bounds, limit, stopped)
    except storage.StorageBusy as busy:
        metrics.track_storage(tenant.name, stopped)
        return Condition(cond.STORAGE_EXCEEDED, stopped, BUSY,
                         f"{busy}; the tenant's sessions hold locks on its data, tried again with backoff")
    metrics.track_storage(tenant.name, over if limit is not None else None)
    if limit is None:
        return None
    if over:
        return Condition(cond.STORAGE_EXCEEDED, True, "OverMaxSize",
                         f"{where}: writes are stopped (reads go on) until the tenant is back under its maxSize")
    return Condition(cond.STORAGE_EXCEEDED, False, "WithinMaxSize", where)


def _act(ctx: Context, tenant: Tenant, placement: DataPlacement, bounds: limits.DatabaseLimits, limit: int | None,
         stopped: bool) -> tuple[bool, str]:
    """Measure, then stop, repair or lift; whether the tenant is over, and its size in words."""
    dsn = ctx.server.admin_dsn()
    if stopped:
        storage.vacuum(dsn, placement)
    size = storage.size(dsn, placement)
    over = limit is not None and size > limit
    where = f"{size} bytes of {bounds.max_size} ({limit} bytes)" if limit is not None else f"{size} bytes"
    if over:
        done = storage.stop(dsn, placement)
        metrics.count_write("postgres", len(done))
        if not stopped:
            ctx.events.post(tenant, "StorageExceeded", f"{where}: writes stopped, reads go on; delete data or raise "
                                                       f"the plan's maxSize ({'; '.join(done)})", warning=True)
        elif done:
            ctx.events.post(tenant, "StorageStopRepaired", f"{where}: the stop was not whole: {'; '.join(done)}",
                            warning=True)
    elif stopped:
        done = storage.lift(dsn, placement)
        metrics.count_write("postgres", len(done))
        ctx.events.post(tenant, "StorageRestored", f"{where}: writes allowed again ({'; '.join(done)})")
    return over, where
