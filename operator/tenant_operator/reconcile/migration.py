"""The tier migration state machine (shared <-> isolated), recorded in status.migration.

prepare -> freeze -> copy -> verify -> switch -> retire. The step being worked on
is written to the status before its work starts, so an operator that dies at
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

import contextlib
import datetime
import logging
import time
from typing import Iterator

import psycopg

from tenant_operator.api import conditions as cond
from tenant_operator.api import names
from tenant_operator.api.conditions import Condition
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.infra import faults, metrics, postgres, tierdata
from tenant_operator.infra.fence import Authority, Deposed
from tenant_operator.infra.kube import KINDS, TENANT, ObjectRef
from tenant_operator.infra.tenantlock import LockBusy, TenantLock

log = logging.getLogger(__name__)

STEPS = ("prepare", "freeze", "copy", "verify", "switch", "retire")
ROLLBACK_STEPS = ("prepare", "freeze", "copy", "verify")
ROLLED_BACK_REASONS = ("VerificationFailed", "TargetNotEmpty", "CopyFailed", "MigrationFailed")
# Another process holds the tenant's lock (and may not be displaced): look again this much later.
LOCK_BUSY_RETRY = 2.0


class VerificationFailed(Exception):
    pass


class _Wait(Exception):
    """The step is waiting on something outside (workloads becoming Available)."""


class _Stop(Exception):
    """The Tenant changed under the move: cancelled (spec.tier set back) or being deleted."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def in_progress(status: dict | None) -> bool:
    return bool((status or {}).get("migration"))


def safe_to_delete(status: dict | None) -> bool:
    """Deletion waits while a migration runs: it may hold data in two places."""
    return not in_progress(status)


def wanted(body: dict, tenant) -> bool:
    """A migration runs, or should start: the tenant lives on another tier than its spec asks."""
    status = body.get("status") or {}
    if status.get("migration"):
        return True
    current, desired = status.get("tier"), render.value(tenant.spec.tier)
    if not current or current == desired:
        return False
    # A rolled-back migration is not retried for the same spec: a person looks first.
    last = cond.find(status.get("conditions", []), cond.MIGRATING)
    return not (last and last["reason"] in ROLLED_BACK_REASONS
                and last.get("observedGeneration") == body["metadata"].get("generation"))


def _timestamp() -> str:
    return cond.now()


def _epoch(timestamp: str) -> float:
    return datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


@contextlib.contextmanager
def authority_over(ctx, tenant_name: str) -> Iterator[Authority]:
    """The tenant's lock, taken (from a deposed holder too, when we lead) for the block."""
    lock = TenantLock(ctx.settings.admin_dsn(), tenant_name)
    lock.acquire(may_break=ctx.leading())
    with lock:
        yield Authority(ctx.leading, lock)


def advance(ctx, body: dict, tenant, plan):
    from tenant_operator.reconcile.converge import Outcome, Superseded

    try:
        with authority_over(ctx, tenant.name) as authority:
            return _advance(ctx, authority, body, tenant, plan)
    except LockBusy as busy:
        log.info("tenant %s: migration waits: %s", tenant.name, busy)
        return Outcome(requeue_after=LOCK_BUSY_RETRY)
    except Deposed as deposed:
        log.warning("tenant %s: migration stops here: %s", tenant.name, deposed)
        return Outcome()
    except Superseded as superseded:
        log.info("tenant %s: migration looks again: %s", tenant.name, superseded)
        return Outcome(requeue_after=0.5)
    except postgres.DatabaseUnavailable as error:
        log.warning("tenant %s: migration waits for PostgreSQL: %s", tenant.name, error)
        return Outcome(failed=True)


def _advance(ctx, authority: Authority, body: dict, tenant, plan):
    from tenant_operator.reconcile.converge import Outcome

    if not _reload(ctx, body, None):
        return Outcome()
    status = body.get("status") or {}
    record = dict(status.get("migration") or {})
    if not record:
        if not wanted(body, tenant):
            return Outcome(requeue_after=0.0)  # the cached Tenant was stale: reconcile it as it is now
        record = {"from": status["tier"], "to": render.value(tenant.spec.tier), "step": "prepare",
                  "started": _timestamp(), "tables": [], "rowsCopied": 0}
        ctx.events.post(body, "MigrationStarted", f"moving from {record['from']} to {record['to']}")
    source = postgres.placement(tenant.name, record["from"], ctx.settings.shared_database)
    target = postgres.placement(tenant.name, record["to"], ctx.settings.shared_database)
    move = _Move(ctx, authority, body, tenant, plan, record, source, target,
                 on_server=(status.get("migration") or {}).get("step"))
    try:
        return move.run()
    except _Stop as stop:
        if stop.reason == "Deleting":
            log.info("tenant %s: %s", tenant.name, stop)
            return Outcome(requeue_after=0.0)  # the deletion settles the move (settle_for_deletion)
        return move.roll_back(stop.reason, str(stop))


class _Move:
    """One pass of a migration by the process holding the tenant's authority."""

    def __init__(self, ctx, authority: Authority, body: dict, tenant, plan, record: dict, source, target,
                 on_server: str | None):
        self.ctx, self.authority, self.body, self.tenant, self.plan = ctx, authority, body, tenant, plan
        self.record, self.source, self.target = record, source, target
        self.admin = ctx.settings.admin_dsn()
        self.on_server = (record["started"], on_server) if on_server else (None, None)
        """(started, step) of the record as this process last saw or wrote it on the Tenant."""

    def run(self):
        from tenant_operator.reconcile.converge import Outcome

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
            except postgres.DatabaseUnavailable as error:
                self.authority.check("report that PostgreSQL is unavailable")
                self.checkpoint(f"step {step} waits for PostgreSQL: {error}")
                return Outcome(failed=True)
            except (VerificationFailed, tierdata.TargetNotEmpty, tierdata.ToolFailed, postgres.StillConnected,
                    psycopg.Error) as error:
                self.authority.check(f"handle the failure of step {step}")
                if step not in ROLLBACK_STEPS:
                    log.warning("tenant %s: migration step %s failed, will retry: %s", name, step, error)
                    self.checkpoint(f"step {step} failed, retrying: {error}")
                    return Outcome(failed=True)
                if isinstance(error, postgres.StillConnected):
                    self.checkpoint(f"step {step} waits: {error}")
                    return Outcome(failed=True)
                reason = {VerificationFailed: "VerificationFailed", tierdata.TargetNotEmpty: "TargetNotEmpty",
                          tierdata.ToolFailed: "CopyFailed"}.get(type(error), "MigrationFailed")
                return self.roll_back(reason, f"{step}: {error}")
        return self.finish()

    # --- authority and the Tenant as it is now -------------------------------------------------

    def _look_again(self, before: str) -> None:
        """Read the Tenant again; stop for a deletion or a flip-back; prove we may still act."""
        self.authority.check(before)
        if not _reload(self.ctx, self.body, self.on_server):
            raise Deposed("the Tenant is gone")
        self.tenant = Tenant.from_body(self.body)
        spec_tier = ((self.body.get("spec") or {}).get("tier"))
        before_switch = self.record["step"] in ROLLBACK_STEPS
        if self.body["metadata"].get("deletionTimestamp"):
            raise _Stop("Deleting", f"the Tenant is being deleted during step {self.record['step']}")
        if before_switch and spec_tier == self.record["from"]:
            raise _Stop("MigrationCancelled", f"spec.tier set back to {self.record['from']} before the switch")
        self.authority.check(before)

    def checkpoint(self, message: str) -> None:
        from tenant_operator.reconcile.converge import _report

        self.authority.check("write the migration's progress")
        record = self.record
        record["message"] = message[:1024]
        migrating = Condition(cond.MIGRATING, True, f"Step{record['step'].capitalize()}",
                              f"{record['from']} -> {record['to']}: {message}")
        tier = record["to"] if STEPS.index(record["step"]) >= STEPS.index("switch") else record["from"]
        ready = Condition(cond.READY, False, "Migrating", f"moving to the {record['to']} tier")
        _report(self.ctx, self.body, [migrating, ready], phase="Migrating", tier=tier,
                migration_status=dict(record), fenced=True)
        self.on_server = (record["started"], record["step"])

    # --- the steps -------------------------------------------------------------------------------

    def _prepare(self) -> None:
        actions = tierdata.prepare_target(self.admin, self.tenant.name, self.target)
        faults.reached("step:prepare")
        if actions:
            self.authority.check("tell what was prepared")
            self.ctx.events.post(self.body, "MigrationTargetPrepared", "; ".join(actions))

    def _freeze(self) -> None:
        if not self.record.get("freezeStarted"):
            self.record["freezeStarted"] = _timestamp()
        postgres.lock_out(self.admin, self.source.role)
        faults.reached("step:freeze")
        self.authority.check("freeze the workloads")
        if self.source.tier == postgres.ISOLATED:
            spec = self.tenant.spec.model_copy(update={"suspended": True})
            for manifest in render.isolated_workloads(self.tenant.model_copy(update={"spec": spec}), self.plan,
                                                      self.ctx.settings):
                if manifest["kind"] == "Deployment":
                    self.ctx.kube.apply(manifest)
        else:
            self._set_route_state("migrating")

    def _set_route_state(self, state: str) -> None:
        kube, ref = self.ctx.kube, render.routes_ref(self.ctx.settings)
        entry = render.route_entry(self.tenant, self.source.database, state)
        if ((kube.read(ref) or {}).get("data") or {}).get(self.tenant.name) != entry:
            kube.merge_patch(ref, {"data": {self.tenant.name: entry}})

    def _copy(self) -> None:
        record = self.record
        record["tables"], record["rowsCopied"] = [], 0
        started = time.monotonic()
        # A password of this pass's own: the tenant's code may have run (and changed it) in an earlier one.
        password = postgres.lock_out(self.admin, self.source.role)

        def progress(table: str, rows: int) -> None:
            record["tables"].append({"name": table, "rows": rows, "copied": rows})
            record["rowsCopied"] += rows
            self.checkpoint(f"copied {table} ({rows} rows)")

        def between_tables() -> None:
            faults.reached("copy:table")
            self._look_again(before="copy the next table")

        copied = tierdata.copy_schema(self.admin, self.tenant.name, self.source, self.target, password, progress,
                                      bin_dir=self.ctx.settings.pg_bin_dir, between_tables=between_tables)
        seconds = time.monotonic() - started
        metrics.MIGRATION_COPY_SECONDS.observe(seconds)
        faults.reached("copy:done", dsn=postgres.admin_session_dsn(self.ctx.settings.admin_dsn(self.target.database)),
                       schema=self.target.schema, table=next(iter(copied), None))
        log.info("tenant %s: copied %d rows in %d tables in %.2fs", self.tenant.name, sum(copied.values()),
                 len(copied), seconds)

    def _verify(self) -> None:
        # Whatever the tenant's code did while the copy ran as the tenant (set a password of its
        # choosing, made another role a member) ends here: from now on nobody but us acts as it.
        postgres.lock_out(self.admin, self.source.role)
        checks, problems = tierdata.verify(self.admin, self.source, self.target)
        faults.reached("step:verify")
        if problems:
            raise VerificationFailed("; ".join(problems[:5]))
        self.record["tables"] = [
            {"name": check.name, "rows": check.rows, "copied": check.rows, "checksum": check.checksum}
            for key, check in sorted(checks.items()) if not key.startswith("sequence ")]

    def _switch(self) -> None:
        """The source out of reach, then Secret, routing and workloads to the target, then the password."""
        record = self.record
        record["quarantine"] = tierdata.quarantine_name(self.source, _epoch(record["started"]))
        self.authority.check("take the source out of reach")
        tierdata.quarantine(self.authority.lock.session, self.source, record["quarantine"])
        if self.source.tier == postgres.SHARED:
            postgres.revoke_connect(self.admin, self.source.database, self.source.role)
        tierdata.unmark(self.admin, self.target)
        faults.reached("step:switch")
        self.authority.check("point the tenant at the target")
        parts, outcome = self._converge(self.target.tier)
        if parts is None or outcome.failed:
            broken = [p for p in parts or [] if p.ok is False]
            raise postgres.DatabaseUnavailable(broken[0].message if broken else "the target is not ready")
        if not record.get("unfrozen"):
            self.authority.check("let the tenant log in again")
            self._unfreeze()
            record["unfrozen"] = True
            record["freezeSeconds"] = round(time.time() - _epoch(record["freezeStarted"]), 3)
            metrics.MIGRATION_FREEZE.observe(record["freezeSeconds"])
        if outcome.requeue_after is not None:
            raise _Wait("switched; waiting for the workloads of the new tier to become Available")

    def _retire(self) -> None:
        if not self.record.get("retired"):
            self.ctx.events.post(self.body, "SourceQuarantined",
                                 f"the {self.source.tier} copy is kept as {self.record['quarantine']} for "
                                 f"{self.ctx.settings.quarantine_retention_seconds:.0f}s, then dropped")
            self.record["retired"] = True
        faults.reached("step:retire")

    # --- endings -----------------------------------------------------------------------------------

    def _converge(self, tier: str):
        from tenant_operator.reconcile.converge import converge

        return converge(self.ctx, self.body, self.tenant, self.plan, tier, prune=True)

    def _unfreeze(self) -> None:
        """The Secret's password is the role's again (a Secret lost meanwhile was rewritten by converge)."""
        password = _secret_password(self.ctx, self.tenant.name)
        if password is not None:
            postgres.restore_password(self.admin, self.source.role, password, login=not self.tenant.spec.suspended)

    def finish(self):
        from tenant_operator.reconcile.converge import _report, phase

        record = self.record
        seconds = time.time() - _epoch(record["started"])
        metrics.MIGRATIONS.labels("succeeded").inc()
        metrics.MIGRATION_SECONDS.observe(seconds)
        message = (f"moved from {record['from']} to {record['to']} in {seconds:.0f}s; {record['rowsCopied']} rows; "
                   f"writes frozen {record.get('freezeSeconds', 0):.2f}s; source kept as {record.get('quarantine')}")
        self.authority.check("finish the migration")
        parts, outcome = self._converge(record["to"])
        parts = parts or []
        done = Condition(cond.MIGRATING, False, "MigrationCompleted", message)
        _report(self.ctx, self.body, [*parts, cond.summary(parts), done],
                phase=phase(parts, self.tenant, record["to"]), tier=record["to"], fenced=True)
        self.ctx.events.post(self.body, "MigrationCompleted", message)
        return outcome

    def roll_back(self, reason: str, message: str):
        """Back to the source: target removed, writes unfrozen, status.tier unchanged."""
        from tenant_operator.reconcile.converge import _report, phase, summary

        record = self.record
        log.warning("tenant %s: migration rolled back (%s): %s", self.tenant.name, reason, message)
        self.authority.check(f"roll back ({reason})")
        tierdata.drop_target(self.authority.lock.session, self.tenant.name, self.target)
        if record.get("freezeStarted"):
            self._unfreeze()
        metrics.MIGRATIONS.labels("rolled_back" if reason != "MigrationCancelled" else "cancelled").inc()
        # Unfreezes: route and workloads as the source tier wants them; the target's workloads go.
        parts, outcome = self._converge(record["from"])
        parts = parts or []
        failed = Condition(cond.MIGRATING, False, reason,
                           f"migration to {record['to']} rolled back: {message}; the tenant stays on "
                           f"{record['from']}. Change the Tenant's spec to try again.")
        _report(self.ctx, self.body, [*parts, summary(parts, self.tenant, record["from"]), failed],
                phase=phase(parts, self.tenant, record["from"]), tier=record["from"], fenced=True)
        self.ctx.events.post(self.body, reason, f"migration to {record['to']} rolled back: {message}",
                             warning=reason != "MigrationCancelled")
        return outcome


def _reload(ctx, body: dict, expected: tuple[str | None, str | None] | None) -> bool:
    """Replace `body` with the Tenant as the API server has it now; False when it is gone.

    `expected`: (started, step) of the migration record as this process last wrote it.
    Another record on the server means another process moved this migration on.
    """
    fresh = ctx.kube.read(ObjectRef(TENANT, body["metadata"]["name"]))
    if fresh is None:
        return False
    if expected is not None:
        theirs = (fresh.get("status") or {}).get("migration") or {}
        if (theirs.get("started"), theirs.get("step")) != expected:
            raise Deposed(f"the migration record changed under this process (step {theirs.get('step')})")
    body.clear()
    body.update(fresh)
    return True


def _secret_password(ctx, tenant_name: str) -> str | None:
    from tenant_operator.reconcile.converge import _secret_password as password_of

    return password_of(ctx.kube.read(ObjectRef(KINDS[("v1", "Secret")], names.DB_SECRET_NAME,
                                               names.tenant_namespace(tenant_name))))


def settle_for_deletion(ctx, body: dict, tenant) -> None:
    """A migrating tenant is being deleted: leave its data in one place, then clear the record.

    Before the switch the source is still the tenant's home: the target goes. From
    the switch on the target is: it loses its marker and the source is quarantined,
    as the switch would. Workloads, Secret and route are not touched; deletion removes
    them. Each part is idempotent; DatabaseUnavailable leaves the record for a retry.
    Raises LockBusy while another process holds the tenant, Deposed when we may not act.
    """
    from tenant_operator.reconcile.converge import _report

    record = dict(body["status"]["migration"])
    source = postgres.placement(tenant.name, record["from"], ctx.settings.shared_database)
    target = postgres.placement(tenant.name, record["to"], ctx.settings.shared_database)
    dsn = ctx.settings.admin_dsn()
    with authority_over(ctx, tenant.name) as authority:
        authority.check("settle the migration for the deletion")
        if record["step"] in ROLLBACK_STEPS:
            tierdata.drop_target(authority.lock.session, tenant.name, target)
            home, message = record["from"], f"stopped before the switch; the data stays on the {record['from']} tier"
            metrics.MIGRATIONS.labels("cancelled").inc()
        else:
            name = tierdata.quarantine_name(source, _epoch(record["started"]))
            tierdata.quarantine(authority.lock.session, source, name)
            tierdata.unmark(dsn, target)
            home, message = record["to"], f"finished after the switch; the {record['from']} copy is kept as {name}"
            metrics.MIGRATIONS.labels("succeeded").inc()
        message = f"the Tenant is being deleted: migration to {record['to']} {message}"
        # Written without the record: the status is applied whole, so status.migration goes.
        _report(ctx, body, [Condition(cond.MIGRATING, False, "MigrationSettled", message)], phase="Deleting",
                tier=home, fenced=True)
    ctx.events.post(body, "MigrationSettled", message)
