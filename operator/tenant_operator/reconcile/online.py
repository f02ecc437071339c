"""The online part of a move: which mode, the replication before the freeze, the tail inside it.

The mode is chosen once, at prepare, and kept in the record: the Tenant's
annotation tenancy.dev/move-mode, else the setting MOVE_MODE (auto by default).
auto moves online when the source server can replicate (replication.capability)
and the tenant's data can be replicated safely (replication.blockers), offline
otherwise; online asks for it and falls back the same way, saying why; offline
never replicates. The reason is in status.migration.modeReason and the
MigrationStarted event.

replicate: the target's tables restored empty at prepare, then the publication,
slot and subscription (idempotent), until every table is synchronised and the
lag is under REPLICATION_LAG_BYTES; progress and the WAL the slot keeps go into
status.migration.replication, with a warning past RETAINED_WAL_WARNING_BYTES.
copy (inside the freeze): the source's WAL position once nobody writes, the
target confirming it, the replication dropped, the sequences set by hand.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from tenant_operator.api import names
from tenant_operator.api.tenant import Tenant
from tenant_operator.infra import replication, storage, usage
from tenant_operator.infra.connection import admin_session
from tenant_operator.infra.postgres import DataPlacement
from tenant_operator.reconcile.context import Context

ONLINE, OFFLINE = "online", "offline"
# Inside the freeze, the target's confirmation of the tail is looked for this often.
CONFIRM_POLL_SECONDS = 0.05


class CatchUpFailed(Exception):
    """The target did not confirm the tail within the freeze's allowance: the move rolls back."""


@dataclasses.dataclass(frozen=True)
class Sides:
    """The two admins and placements of a move."""

    source_admin: str
    target_admin: str
    source: DataPlacement
    target: DataPlacement


def choose_mode(ctx: Context, tenant: Tenant, sides: Sides, maintenance_dsn: str) -> tuple[str, str, bool]:
    """(mode, why, superuser): how this move copies the tenant's data."""
    asked = tenant.annotations.get(names.MOVE_MODE_ANNOTATION) or ctx.settings.move_mode
    if asked not in ("auto", ONLINE, OFFLINE):
        asked = ctx.settings.move_mode
    if asked == OFFLINE:
        return OFFLINE, "offline asked for: the copy runs inside the freeze", False
    if storage.stopped(sides.source_admin, sides.source):
        # Replication would need it at rest (its dump, its grants) while it may still write: kept
        # stopped instead until the freeze, which lifts the stop once the tenant is locked out.
        return OFFLINE, "the tenant is over its maxSize and stays read-only until the freeze; the copy runs " \
                        "inside it", False
    able = replication.capability(maintenance_dsn)
    if not able.online:
        return OFFLINE, f"the source server cannot replicate: {able.reason}; the copy runs inside the freeze", False
    stopping = replication.blockers(sides.source_admin, sides.source)
    if stopping:
        return OFFLINE, f"{'; '.join(stopping)}; the copy runs inside the freeze", False
    return ONLINE, "logical replication while the tenant writes; the freeze covers the tail", able.superuser


def replicate(ctx: Context, sides: Sides, record: dict[str, Any], superuser: bool,
              warn: Callable[[str], None]) -> str | None:
    """Start or follow the replication; None once it is close enough to freeze, else what it waits for."""
    replication.start(sides.source_admin, sides.target_admin, sides.source, sides.target, superuser)
    now = replication.progress(sides.source_admin, sides.target_admin, sides.source, sides.target)
    record["replication"] = {"slot": replication.object_name(sides.source.schema), "tables": now.tables,
                             "tablesSynchronised": now.synchronised, "lagBytes": now.lag_bytes,
                             "retainedWalBytes": now.retained_bytes}
    heavy = ""
    if now.retained_bytes is not None and now.retained_bytes > ctx.settings.retained_wal_warning_bytes:
        heavy = (f"; WARNING: replication slot {replication.object_name(sides.source.schema)} keeps "
                 f"{now.retained_bytes} bytes of WAL on the source (warning past "
                 f"{ctx.settings.retained_wal_warning_bytes})")
        warn(heavy.removeprefix("; WARNING: "))
    if not now.caught_up:
        return f"replicating: {now.synchronised} of {now.tables} table(s) synchronised{heavy}"
    if now.lag_bytes is None or now.lag_bytes > ctx.settings.replication_lag_bytes:
        return f"replicating: {now.lag_bytes} bytes behind the source{heavy}"
    return None


def final_catch_up(ctx: Context, sides: Sides, record: dict[str, Any], check: Callable[[str], None]) -> None:
    """Inside the freeze: the target confirms the source's last write, then the replication goes.

    `check` proves the process may still act (fence.py) before each look and before the drop: a process
    that paused here and woke deposed opens no session.
    """
    check("take the replication's tail")
    if replication.slot_bytes(sides.source_admin, sides.source) != (None, None):
        lsn = record.setdefault("catchUpLsn", replication.position(sides.source_admin, sides.source))
        deadline = time.monotonic() + ctx.settings.replication_catch_up_seconds
        while not replication.confirmed(sides.source_admin, sides.source, lsn):
            if time.monotonic() > deadline:
                raise CatchUpFailed(f"the target did not apply the source's writes up to {lsn} within "
                                    f"{ctx.settings.replication_catch_up_seconds:.0f}s")
            time.sleep(CONFIRM_POLL_SECONDS)
            check("wait for the replication's tail")
    check("drop the replication")
    drop(sides)
    record.pop("replication", None)


def drop(sides: Sides, target_exists: bool = True) -> list[str]:
    """The move's subscription, slot and publication, whichever exist (every path out of a move)."""
    return replication.drop(sides.source_admin, sides.target_admin if target_exists else None, sides.source,
                            sides.target)


def small_enough(ctx: Context, sides: Sides) -> bool:
    """Whether the tenant's checksums fit in its freeze (ONLINE_CHECKSUM_BYTES): above, rows are counted only.

    Summing a hash of every row costs about 5 s per GB and side on these machines: a large tenant's writes
    would stay frozen that long for a check of what replication applied change by change. Counts still
    catch a missing or extra row, and sequences are compared as ever.
    """
    with admin_session(sides.source_admin) as conn:
        size = usage.tenant_bytes(conn, sides.source.schema,
                                  sides.source.database if sides.source.tier == "isolated" else None)
    return size <= ctx.settings.online_checksum_bytes
