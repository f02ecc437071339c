"""The move state machine, (server, tier) to (server, tier), recorded in status.migration.

prepare -> replicate -> freeze -> copy -> verify -> switch -> retire (replicate acts only
in an online move, whose copy then takes the replication's tail: online.py). The step
being worked on is written to the status before its work starts, so an operator that dies at
any point resumes by running that step again; every step is idempotent. Before
switch a failure rolls back to the source (target removed, writes unfrozen,
tier unchanged); from switch on the target is the tenant's home and the
migration only goes forward.

Nothing committed is lost:
- freeze: the tenant's role gets a password only the operator knows (and keeps
  LOGIN, so that the operator runs the tenant's code as the tenant, tierdata.py);
  every session of the role is ended and proven gone. Writes stop there.
- switch: the source goes out of reach first (renamed, locked; a shared source's
  role also loses CONNECT on the shared database), then the Secret, routing and
  workloads point at the target, and only then does the password of the Secret
  work again. A client still holding the old Secret gets an error from the old
  home, never a write into it. The sequences were read after the freeze.

Who may act: one process at a time, proven before every step (fence.py): the
Lease, the tenant's PostgreSQL lock (tenantlock.py) on whose session the source
is renamed and the target dropped, and checkpoints written over the
resourceVersion just read. Before each step and between two tables the Tenant is
read again: a deletion, or spec.tier set back to the source before the switch,
stops the move there (MigrationCancelled), with the one freeze it had.
"""

from __future__ import annotations

import logging
import time

import psycopg

from tenant_operator.api import conditions as cond
from tenant_operator.api.conditions import Condition
from tenant_operator.api.plan import TenantPlan
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.infra import (
    connection,
    faults,
    metrics,
    postgres,
    replication,
    shared_database,
    storage,
    tierdata,
)
from tenant_operator.infra.fence import Authority, Deposed
from tenant_operator.infra.servers import ServerUnusable
from tenant_operator.infra.tenantlock import LockBusy
from tenant_operator.reconcile import moves, online, placement
from tenant_operator.reconcile.context import Context, Outcome
from tenant_operator.reconcile.converge import Converged, converge
from tenant_operator.reconcile.report import Superseded, phase, report, summary
from tenant_operator.reconcile.state import LOCK_BUSY_RETRY, ROLLBACK_STEPS, STEPS

log = logging.getLogger(__name__)


class VerificationFailed(Exception):
    pass


class _TargetNotReady(Exception):
    """The switch could not bring a part of the tenant to the target tier (told in the message)."""


class _Wait(Exception):
    """The step is waiting on something outside (workloads becoming Available)."""


class _Stop(Exception):
    """The Tenant changed under the move: cancelled (spec.tier set back) or being deleted."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def _timestamp() -> str:
    return cond.now()


def advance(ctx: Context, tenant: Tenant, plan: TenantPlan) -> Outcome:
    try:
        ctx = ctx.on(moves.source_server(ctx, tenant))
        with moves.authority_over(ctx, tenant.name) as authority:
            return _advance(ctx, authority, tenant, plan)
    except ServerUnusable as error:
        log.warning("tenant %s: migration waits for its server: %s", tenant.name, error)
        return Outcome(failed=True)
    except LockBusy as busy:
        log.info("tenant %s: migration waits: %s", tenant.name, busy)
        return Outcome(requeue_after=LOCK_BUSY_RETRY)
    except Deposed as deposed:
        log.warning("tenant %s: migration stops here: %s", tenant.name, deposed)
        return Outcome()
    except Superseded as superseded:
        log.info("tenant %s: migration looks again: %s", tenant.name, superseded)
        return Outcome(requeue_after=0.5)
    except connection.DatabaseUnavailable as error:
        log.warning("tenant %s: migration waits for PostgreSQL: %s", tenant.name, error)
        return Outcome(failed=True)


def _advance(ctx: Context, authority: Authority, tenant: Tenant, plan: TenantPlan) -> Outcome:
    fresh = moves.reload(ctx, tenant, None)
    if fresh is None:
        return Outcome()
    tenant = fresh
    record = tenant.migration_record()
    on_server = record.get("step")
    if not record:
        where = placement.destination(ctx, tenant, plan)
        if not where.moving or where.server is None or placement.home_of(tenant) != ctx.server.name:
            return Outcome(requeue_after=0.0)  # the cached Tenant was stale: reconcile it as it is now
        record = {"from": render.value(tenant.status.tier), "to": render.value(tenant.spec.tier),
                  "fromServer": ctx.server.name, "toServer": where.server.name, "step": "prepare",
                  "started": _timestamp(), "tables": [], "rowsCopied": 0}
        ctx.events.post(tenant, "MigrationStarted",
                        f"moving from {moves.where(record, 'from')} to {moves.where(record, 'to')}")
    source = postgres.placement(tenant.name, record["from"], ctx.settings.shared_database)
    target = postgres.placement(tenant.name, record["to"], ctx.settings.shared_database)
    target_ctx = ctx.on(ctx.servers.get(record.get("toServer") or ctx.server.name))
    move = _Move(ctx, target_ctx, authority, tenant, plan, record, source, target, on_server=on_server)
    try:
        return move.run()
    except _Stop as stop:
        if stop.reason == "Deleting":
            log.info("tenant %s: %s", tenant.name, stop)
            return Outcome(requeue_after=0.0)  # the deletion settles the move (settle_for_deletion)
        return move.roll_back(stop.reason, str(stop))


class _Move:
    """One pass of a migration by the process holding the tenant's authority."""

    def __init__(self, ctx: Context, target_ctx: Context, authority: Authority, tenant: Tenant, plan: TenantPlan,
                 record: dict, source: postgres.DataPlacement, target: postgres.DataPlacement, on_server: str | None):
        self.ctx, self.target_ctx, self.authority, self.tenant, self.plan = ctx, target_ctx, authority, tenant, plan
        self.record, self.source, self.target = record, source, target
        self.admin = ctx.server.admin_dsn()
        """The source server's admin; the target server's is `target_admin` (the same one within a server)."""
        self.target_admin = target_ctx.server.admin_dsn()
        self.target_session = connection.admin_session_dsn(target_ctx.server.admin_dsn(target.database))
        self.across = target_ctx.server.name != ctx.server.name
        self.sides = online.Sides(self.admin, self.target_admin, source, target)
        self.on_server: tuple[str | None, str | None] = (record["started"], on_server) if on_server else (None, None)
        """(started, step) of the record as this process last saw or wrote it on the Tenant."""

    def run(self) -> Outcome:
        """Every step from the recorded one on; a failure before the switch rolls back.

        Long for a reason: the one place that maps each way a step can fail to what
        happens next (wait, retry, roll back), which reads best in one piece.
        """
        record, name = self.record, self.tenant.name
        for step in STEPS[STEPS.index(record["step"]):]:
            self._look_again(before=f"step {step}")
            record["step"] = step
            self.checkpoint(f"step {step}")
            started = time.monotonic()
            try:
                getattr(self, f"_{step}")()
                log.info("tenant %s: migration step %s done in %.2fs", name, step, time.monotonic() - started)
            except _Wait as waiting:
                self.checkpoint(str(waiting))
                return Outcome(requeue_after=2.0)
            except connection.DatabaseUnavailable as error:
                self.authority.check("report that PostgreSQL is unavailable")
                self.checkpoint(f"step {step} waits for PostgreSQL: {error}")
                return Outcome(failed=True)
            except _TargetNotReady as error:
                log.warning("tenant %s: migration step %s waits for the target: %s", name, step, error)
                self.authority.check("report what the target lacks")
                self.checkpoint(f"step {step} waits for the target: {error}")
                return Outcome(failed=True)
            except (VerificationFailed, tierdata.TargetNotEmpty, tierdata.ToolFailed, postgres.StillConnected,
                    online.CatchUpFailed, psycopg.Error) as error:
                self.authority.check(f"handle the failure of step {step}")
                if step not in ROLLBACK_STEPS:
                    log.warning("tenant %s: migration step %s failed, will retry: %s", name, step, error)
                    self.checkpoint(f"step {step} failed, retrying: {error}")
                    return Outcome(failed=True)
                if isinstance(error, postgres.StillConnected) or moves.passing(error):
                    self.checkpoint(f"step {step} waits: {error}")
                    return Outcome(failed=True)
                reason = {VerificationFailed: "VerificationFailed", tierdata.TargetNotEmpty: "TargetNotEmpty",
                          tierdata.ToolFailed: "CopyFailed", online.CatchUpFailed: "CatchUpFailed"}.get(
                    type(error), "MigrationFailed")
                return self.roll_back(reason, f"{step}: {error}")
        return self.finish()

    # --- authority and the Tenant as it is now -------------------------------------------------

    def _look_again(self, before: str) -> None:
        """Read the Tenant again; stop for a deletion or a flip-back; prove we may still act."""
        self.authority.check(before)
        fresh = moves.reload(self.ctx, self.tenant, self.on_server)
        if fresh is None:
            raise Deposed("the Tenant is gone")
        self.tenant = fresh
        before_switch = self.record["step"] in ROLLBACK_STEPS
        if self.tenant.deleting:
            raise _Stop("Deleting", f"the Tenant is being deleted during step {self.record['step']}")
        if before_switch and self._wants_source():
            raise _Stop("MigrationCancelled", f"spec set back to {moves.where(self.record, 'from')} before the switch")
        self.authority.check(before)

    def _wants_source(self) -> bool:
        """The spec asks for the source again: its tier, and its server (pinned there, or a pin taken away
        from a server that does not drain: the operator moves no tenant on its own)."""
        spec = self.tenant.spec
        if render.value(spec.tier) != self.record["from"]:
            return False
        if spec.database.server is not None:
            return spec.database.server == self.ctx.server.name
        return not (self.across and self.ctx.server.drain)

    def checkpoint(self, message: str) -> None:
        self.authority.check("write the migration's progress")
        record = self.record
        record["message"] = message[:1024]
        migrating = Condition(cond.MIGRATING, True, f"Step{record['step'].capitalize()}",
                              f"{moves.where(record, 'from')} -> {moves.where(record, 'to')}: {message}")
        switched = STEPS.index(record["step"]) >= STEPS.index("switch")
        tier = record["to"] if switched else record["from"]
        ready = Condition(cond.READY, False, "Migrating", f"moving to {moves.where(record, 'to')}")
        self.tenant = report(self.target_ctx if switched else self.ctx, self.tenant, [migrating, ready],
                             phase="Migrating", tier=tier, migration_status=dict(record), fenced=True)
        self.on_server = (record["started"], record["step"])

    # --- the steps -------------------------------------------------------------------------------

    def _prepare(self) -> None:
        if self.across and self.target.tier == postgres.SHARED:
            shared_database.ensure_shared_database(self.target_ctx.server.maintenance_dsn(),
                                                   self.ctx.settings.shared_database)
        if "mode" not in self.record:
            mode, why, _ = online.choose_mode(self.ctx, self.tenant, self.sides, self.ctx.server.maintenance_dsn())
            self.record.update(mode=mode, modeReason=why)
            self.authority.check("tell how the move copies")
            self.ctx.events.post(self.tenant, "MigrationMode", f"{mode}: {why}")
        replicated = self.record["mode"] == online.ONLINE
        actions = tierdata.prepare_target(self.target_admin, self.tenant.name, self.target,
                                          postgres.new_password() if self.across else None, connect=not replicated)
        if replicated:
            # Out of the tenant's reach until the switch: a client still holding an old Secret of this server
            # would otherwise write into the target behind the replication's back.
            postgres.shut_out_of(self.target_admin, self.target.database, self.target.role)
            # The target's tables, empty, for the subscription to fill (the tenant owns no function: see online.py).
            tierdata.restore_schema(self.admin, self.target_admin, self.tenant.name, self.source, self.target,
                                    self.ctx.settings.pg_bin_dir)
        faults.reached("step:prepare")
        if actions:
            self.authority.check("tell what was prepared")
            self.ctx.events.post(self.tenant, "MigrationTargetPrepared", "; ".join(actions))

    def _replicate(self) -> None:
        if self.record.get("mode") != online.ONLINE:
            return
        self.authority.check("replicate the tenant's tables")
        superuser = replication.capability(self.ctx.server.maintenance_dsn()).superuser
        waiting = online.replicate(self.ctx, self.sides, self.record, superuser, lambda message: self.ctx.events.post(
            self.tenant, "ReplicationSlotRetainsWAL", message, warning=True))
        faults.reached("step:replicate")
        if waiting is not None:
            raise _Wait(waiting)

    def _freeze(self) -> None:
        if not self.record.get("freezeStarted"):
            self.record["freezeStarted"] = _timestamp()
            self.record["freezeStartedAt"] = round(time.time(), 3)  # the freeze is told to the millisecond
        postgres.lock_out(self.admin, self.source.role)
        # A tenant over its maxSize stays stopped until here (online.choose_mode copies it offline): locked
        # out, it cannot write, and it is copied as it is at rest, owning its objects with their grants. Its
        # new home looks at its size once it is there, and stops it again if it is still over.
        storage.lift(self.admin, self.source)
        faults.reached("step:freeze")
        self.authority.check("freeze the workloads")
        if self.source.tier == postgres.ISOLATED:
            spec = self.tenant.spec.model_copy(update={"suspended": True})
            for manifest in render.isolated_workloads(self.tenant.model_copy(update={"spec": spec}), self.plan,
                                                      self.ctx.settings):
                if manifest["kind"] == "Deployment":
                    self.ctx.kube.apply(manifest)
        else:
            self._set_route_state("moving")

    def _set_route_state(self, state: str) -> None:
        kube, ref = self.ctx.kube, render.routes_ref(self.ctx.settings)
        entry = render.route_entry(self.tenant, self.source.database, state,
                                   (self.ctx.server.name, *self.ctx.server.endpoint))
        if ((kube.read(ref) or {}).get("data") or {}).get(self.tenant.name) != entry:
            kube.merge_patch(ref, {"data": {self.tenant.name: entry}})

    def _copy(self) -> None:
        if self.record.get("mode") == online.ONLINE:
            # Nobody writes now: the target confirms the source's last write, then the replication goes.
            faults.reached("step:copy")  # frozen, the replication still in place
            online.final_catch_up(self.ctx, self.sides, self.record, self.authority.check)
            self.authority.check("set the sequences")
            tierdata.copy_sequences(self.admin, self.target_admin, self.source, self.target)
            faults.reached("copy:done", dsn=self.target_session,
                           schema=self.target.schema,
                           table=next(iter(tierdata.table_names(self.target_admin, self.target)), None))
            return
        record = self.record
        record["tables"], record["rowsCopied"] = [], 0
        started = time.monotonic()
        # A password of this pass's own: the tenant's code may have run (and changed it) in an earlier one.
        password = postgres.lock_out(self.admin, self.source.role)
        if self.across:
            password = postgres.lock_out(self.target_admin, self.target.role)  # the copy writes as the tenant there

        def progress(table: str, rows: int) -> None:
            record["tables"].append({"name": table, "rows": rows, "copied": rows})
            record["rowsCopied"] += rows
            self.checkpoint(f"copied {table} ({rows} rows)")

        def between_tables() -> None:
            faults.reached("copy:table")
            self._look_again(before="copy the next table")

        copied = tierdata.copy_schema(self.admin, self.target_admin, self.tenant.name, self.source, self.target,
                                      password, progress, bin_dir=self.ctx.settings.pg_bin_dir,
                                      between_tables=between_tables)
        seconds = time.monotonic() - started
        metrics.MIGRATION_COPY_SECONDS.observe(seconds)
        faults.reached("copy:done", dsn=self.target_session,
                       schema=self.target.schema, table=next(iter(copied), None))
        log.info("tenant %s: copied %d rows in %d tables in %.2fs", self.tenant.name, sum(copied.values()),
                 len(copied), seconds)

    def _verify(self) -> None:
        # Whatever the tenant's code did while the copy ran as the tenant (set a password of its
        # choosing, made another role a member) ends here: from now on nobody but us acts as it.
        postgres.lock_out(self.admin, self.source.role)
        if self.across:
            postgres.lock_out(self.target_admin, self.target.role)
        sums = self.record.get("mode") != online.ONLINE or online.small_enough(self.ctx, self.sides)
        checks, problems = tierdata.verify(self.admin, self.target_admin, self.source, self.target, sums)
        faults.reached("step:verify")
        if problems:
            raise VerificationFailed("; ".join(problems[:5]))
        self.record["tables"] = [
            {"name": check.name, "rows": check.rows, "copied": check.rows, "checksum": check.checksum}
            for key, check in sorted(checks.items()) if not key.startswith("sequence ")]

    def _switch(self) -> None:
        """The source out of reach, then Secret, routing and workloads to the target, then the password."""
        record = self.record
        record["quarantine"] = tierdata.quarantine_name(self.source, moves.epoch(record["started"]))
        self.authority.check("take the source out of reach")
        tierdata.quarantine(self.authority.lock.session, self.source, record["quarantine"])
        if self.source.tier == postgres.SHARED:
            postgres.revoke_connect(self.admin, self.source.database, self.source.role)
        if self.across:
            postgres.set_login(self.admin, self.source.role, False)  # the old server is nobody's home now
        tierdata.unmark(self.target_admin, self.target)
        if record.get("mode") == online.ONLINE:
            postgres.grant_connect(self.target_admin, self.target.database, self.target.role)
        faults.reached("step:switch")
        self.authority.check("point the tenant at the target")
        converged = self._converge(target=True)
        if converged.refused or converged.outcome.failed:
            broken = [f"{p.type} {p.reason}: {p.message}" for p in converged.parts if p.ok is False]
            raise _TargetNotReady("; ".join(broken) or "the target is not ready")
        if not record.get("unfrozen"):
            self.authority.check("let the tenant log in again")
            self._unfreeze()
            record["unfrozen"] = True
            began = record.get("freezeStartedAt") or moves.epoch(record["freezeStarted"])
            record["freezeSeconds"] = round(time.time() - began, 3)
            metrics.MIGRATION_FREEZE.observe(record["freezeSeconds"])
        if converged.outcome.requeue_after is not None:
            raise _Wait("switched; waiting for the workloads of the new tier to become Available")

    def _retire(self) -> None:
        if not self.record.get("retired"):
            self.ctx.events.post(self.tenant, "SourceQuarantined",
                                 f"the {self.source.tier} copy is kept as {self.record['quarantine']} for "
                                 f"{self.ctx.settings.quarantine_retention_seconds:.0f}s, then dropped")
            self.record["retired"] = True
        faults.reached("step:retire")

    # --- endings -----------------------------------------------------------------------------------

    def _converge(self, target: bool) -> Converged:  # by side, not tier: a move between servers may keep its tier
        ctx, tier = (self.target_ctx, self.record["to"]) if target else (self.ctx, self.record["from"])
        return converge(ctx, self.tenant, self.plan, tier, prune=True, with_schema=False)

    def _unfreeze(self, home: Context | None = None) -> None:
        """The Secret's password is the role's again (a Secret lost meanwhile was rewritten by converge)."""
        password = moves.tenant_password(self.ctx, self.tenant.name)
        if password is not None:
            postgres.restore_password((home or self.target_ctx).server.admin_dsn(), self.source.role, password,
                                      login=not self.tenant.spec.suspended)

    def finish(self) -> Outcome:
        record = self.record
        seconds = time.time() - moves.epoch(record["started"])
        metrics.MIGRATIONS.labels("succeeded").inc()
        metrics.MIGRATION_SECONDS.observe(seconds)
        message = (f"moved from {moves.where(record, 'from')} to {moves.where(record, 'to')} "
                   f"{record.get('mode', 'offline')} in {seconds:.0f}s; "
                   f"{record['rowsCopied']} rows; "
                   f"writes frozen {record.get('freezeSeconds', 0):.2f}s; source kept as {record.get('quarantine')}")
        self.authority.check("finish the migration")
        converged = self._converge(target=True)
        parts = converged.parts
        done = Condition(cond.MIGRATING, False, "MigrationCompleted", message)
        self.tenant = report(self.target_ctx, self.tenant, [*parts, cond.summary(parts), done],
                             phase=phase(parts, self.tenant, record["to"]), tier=record["to"], fenced=True)
        self.ctx.events.post(self.tenant, "MigrationCompleted", message)
        return converged.outcome

    def roll_back(self, reason: str, message: str) -> Outcome:
        """Back to the source: target removed, writes unfrozen, status.tier unchanged."""
        record = self.record
        log.warning("tenant %s: migration rolled back (%s): %s", self.tenant.name, reason, message)
        self.authority.check(f"roll back ({reason})")
        if record.get("mode") == online.ONLINE:
            online.drop(self.sides)  # before the target: a database with a subscription cannot be dropped
        if self.across:
            with connection.admin_session(self.target_admin) as session:
                self.authority.check("remove the target on the other server")
                tierdata.drop_target(session, self.tenant.name, self.target)
            moves.shut_out(self.target_admin, self.target.role)
        else:
            tierdata.drop_target(self.authority.lock.session, self.tenant.name, self.target)
        if record.get("freezeStarted"):
            self._unfreeze(home=self.ctx)
        metrics.MIGRATIONS.labels("rolled_back" if reason != "MigrationCancelled" else "cancelled").inc()
        # Unfreezes: route and workloads as the source tier wants them; the target's workloads go.
        converged = self._converge(target=False)
        parts = converged.parts
        failed = Condition(cond.MIGRATING, False, reason,
                           f"migration to {moves.where(record, 'to')} rolled back: {message}; the tenant stays on "
                           f"{moves.where(record, 'from')}. Change the Tenant's spec to try again.")
        self.tenant = report(self.ctx, self.tenant, [*parts, summary(parts, self.tenant, record["from"]), failed],
                             phase=phase(parts, self.tenant, record["from"]), tier=record["from"], fenced=True)
        self.ctx.events.post(self.tenant, reason, f"migration to {record['to']} rolled back: {message}",
                             warning=reason != "MigrationCancelled")
        return converged.outcome


