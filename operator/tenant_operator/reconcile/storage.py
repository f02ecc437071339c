"""maxSize: a tenant over it has its writes stopped, and back under it gets them back by itself.

Looked at by every reconcile of a tenant whose plan (or overrides) sets maxSize,
and of one still stopped: its size (one query), compared with the limit. While
stopped, the tenant's tables are vacuumed first, so rows it deleted at a table's
end count at once. The mechanism, and why it holds: infra/storage.py.
"""

from __future__ import annotations

from tenant_operator.api import conditions as cond
from tenant_operator.api import limits
from tenant_operator.api.conditions import Condition
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra import metrics, storage
from tenant_operator.infra.postgres import DataPlacement
from tenant_operator.reconcile.context import Context


def enforce(ctx: Context, tenant: Tenant, placement: DataPlacement, bounds: limits.DatabaseLimits,
            stopped: bool) -> Condition | None:
    """Stop or lift as the size says; the StorageExceeded condition (None: no maxSize, nothing stopped)."""
    limit = limits.max_bytes(bounds)
    if limit is None and not stopped:
        return None
    dsn = ctx.server.admin_dsn()
    if stopped:
        storage.vacuum(dsn, placement)
    size = storage.size(dsn, placement)
    over = limit is not None and size > limit
    where = f"{size} bytes of {bounds.max_size} ({limit} bytes)" if limit is not None else f"{size} bytes"
    if over and not stopped:
        metrics.count_write("postgres", len(storage.stop(dsn, placement)))
        ctx.events.post(tenant, "StorageExceeded", f"{where}: writes stopped, reads go on; delete data or raise "
                                                   "the plan's maxSize", warning=True)
    elif not over and stopped:
        metrics.count_write("postgres", len(storage.lift(dsn, placement)))
        ctx.events.post(tenant, "StorageRestored", f"{where}: writes allowed again")
    if limit is None:
        return None
    if over:
        return Condition(cond.STORAGE_EXCEEDED, True, "OverMaxSize",
                         f"{where}: writes are stopped (reads go on) until the tenant is back under its maxSize")
    return Condition(cond.STORAGE_EXCEEDED, False, "WithinMaxSize", where)
