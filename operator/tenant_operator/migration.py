"""The tier migration state machine (shared <-> isolated), recorded in status.migration.

prepare -> freeze -> copy -> verify -> switch -> retire. The step being worked on
is written to the status before its work starts, so an operator that dies at
any point resumes by running that step again; every step is idempotent. Before
switch a failure rolls back to the source (target removed, writes unfrozen,
tier unchanged); from switch on the target is the tenant's home and the
migration only goes forward. Nothing is dropped: the source is renamed into
quarantine after verify and switch, and only dropped after the retention period.
"""

from __future__ import annotations

import datetime
import logging
import os
import time

import psycopg

from tenant_operator import conditions as cond
from tenant_operator import metrics, postgres, render, tierdata
from tenant_operator.conditions import Condition

log = logging.getLogger(__name__)

STEPS = ("prepare", "freeze", "copy", "verify", "switch", "retire")
ROLLBACK_STEPS = ("prepare", "freeze", "copy", "verify")
ROLLED_BACK_REASONS = ("VerificationFailed", "TargetNotEmpty", "CopyFailed", "MigrationFailed")


class VerificationFailed(Exception):
    pass


class _Wait(Exception):
    """The step is waiting on something outside (workloads becoming Available)."""


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


def advance(ctx, body: dict, tenant, plan):
    from tenant_operator.reconcile import Outcome

    status = body.get("status") or {}
    record = dict(status.get("migration") or {})
    if not record:
        record = {"from": status["tier"], "to": render.value(tenant.spec.tier), "step": "prepare",
                  "started": _timestamp(), "tables": [], "rowsCopied": 0}
        ctx.events.post(body, "MigrationStarted", f"moving from {record['from']} to {record['to']}")
    source = postgres.placement(tenant.name, record["from"], ctx.settings.shared_database)
    target = postgres.placement(tenant.name, record["to"], ctx.settings.shared_database)
    step = record["step"]
    if step in ROLLBACK_STEPS and render.value(tenant.spec.tier) == record["from"]:
        return _roll_back(ctx, body, tenant, plan, record, source, target, "MigrationCancelled",
                          f"spec.tier set back to {record['from']} before the switch")

    for step in STEPS[STEPS.index(step):]:
        record["step"] = step
        _checkpoint(ctx, body, record, f"step {step}")
        started = time.monotonic()
        try:
            STEP_ACTIONS[step](ctx, body, tenant, plan, record, source, target)
            log.info("tenant %s: migration step %s done in %.2fs", tenant.name, step, time.monotonic() - started)
        except _Wait as waiting:
            _checkpoint(ctx, body, record, str(waiting))
            return Outcome(requeue_after=2.0)
        except postgres.DatabaseUnavailable as error:
            _checkpoint(ctx, body, record, f"step {step} waits for PostgreSQL: {error}")
            return Outcome(failed=True)
        except (VerificationFailed, tierdata.TargetNotEmpty, tierdata.ToolFailed, psycopg.Error) as error:
            if step not in ROLLBACK_STEPS:
                log.warning("tenant %s: migration step %s failed, will retry: %s", tenant.name, step, error)
                _checkpoint(ctx, body, record, f"step {step} failed, retrying: {error}")
                return Outcome(failed=True)
            reason = {VerificationFailed: "VerificationFailed", tierdata.TargetNotEmpty: "TargetNotEmpty",
                      tierdata.ToolFailed: "CopyFailed"}.get(type(error), "MigrationFailed")
            return _roll_back(ctx, body, tenant, plan, record, source, target, reason, f"{step}: {error}")
    return _finish(ctx, body, tenant, plan, record)


def _checkpoint(ctx, body: dict, record: dict, message: str) -> None:
    from tenant_operator.reconcile import _report

    record["message"] = message[:1024]
    migrating = Condition(cond.MIGRATING, True, f"Step{record['step'].capitalize()}",
                          f"{record['from']} -> {record['to']}: {message}")
    tier = record["to"] if STEPS.index(record["step"]) >= STEPS.index("switch") else record["from"]
    ready = Condition(cond.READY, False, "Migrating", f"moving to the {record['to']} tier")
    _report(ctx, body, [migrating, ready], phase="Migrating", tier=tier, migration_status=dict(record))


def _fault(ctx, step: str) -> None:
    """Test hook: die inside a step, after its first effects, as a killed pod would."""
    if ctx.settings.fault == f"crash:{step}":
        log.warning("fault injection: exiting inside migration step %s", step)
        os._exit(137)


def _prepare(ctx, body, tenant, plan, record, source, target) -> None:
    actions = tierdata.prepare_target(ctx.settings.admin_dsn(), tenant.name, target)
    _fault(ctx, "prepare")
    if actions:
        ctx.events.post(body, "MigrationTargetPrepared", "; ".join(actions))


def _freeze(ctx, body, tenant, plan, record, source, target) -> None:
    if not record.get("freezeStarted"):
        record["freezeStarted"] = _timestamp()
    postgres.set_login(ctx.settings.admin_dsn(), source.role, False)  # ends the open sessions too
    _fault(ctx, "freeze")
    if source.tier == "isolated":
        frozen = tenant.model_copy(update={"spec": tenant.spec.model_copy(update={"suspended": True})})
        for manifest in render.isolated_workloads(frozen, plan, ctx.settings):
            if manifest["kind"] == "Deployment":
                ctx.kube.apply(manifest)
    else:
        _set_route_state(ctx, tenant, source, "migrating")


def _set_route_state(ctx, tenant, placement, state: str) -> None:
    ref = render.routes_ref(ctx.settings)
    wanted = render.route_entry(tenant, placement.database, state)
    if ((ctx.kube.read(ref) or {}).get("data") or {}).get(tenant.name) != wanted:
        ctx.kube.merge_patch(ref, {"data": {tenant.name: wanted}})


def _copy(ctx, body, tenant, plan, record, source, target) -> None:
    record["tables"], record["rowsCopied"] = [], 0
    started = time.monotonic()

    def progress(table: str, rows: int) -> None:
        record["tables"].append({"name": table, "rows": rows, "copied": rows})
        record["rowsCopied"] += rows
        _checkpoint(ctx, body, record, f"copied {table} ({rows} rows)")

    copied = tierdata.copy_schema(ctx.settings.admin_dsn(), tenant.name, source, target, progress,
                                  between_tables=lambda: _fault(ctx, "copy"))
    seconds = time.monotonic() - started
    metrics.MIGRATION_COPY_SECONDS.observe(seconds)
    if ctx.settings.fault == "corrupt:copy":
        _corrupt_one_row(ctx, target, next(iter(copied), None))
    log.info("tenant %s: copied %d rows in %d tables in %.2fs", tenant.name, sum(copied.values()), len(copied),
             seconds)


def _corrupt_one_row(ctx, target, table: str | None) -> None:
    from psycopg import sql as q

    if table is None:
        return
    with psycopg.connect(ctx.settings.admin_dsn(target.database), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # the row may be referenced: skip FK checks
        name = q.SQL("{}.{}").format(q.Identifier(target.schema), q.Identifier(table))
        conn.execute(q.SQL("DELETE FROM {} WHERE ctid = (SELECT ctid FROM {} LIMIT 1)").format(name, name))


def _verify(ctx, body, tenant, plan, record, source, target) -> None:
    checks, problems = tierdata.verify(ctx.settings.admin_dsn(), source, target)
    _fault(ctx, "verify")
    if problems:
        raise VerificationFailed("; ".join(problems[:5]))
    record["tables"] = [{"name": check.name, "rows": check.rows, "copied": check.rows, "checksum": check.checksum}
                        for key, check in sorted(checks.items()) if not key.startswith("sequence ")]


def _switch(ctx, body, tenant, plan, record, source, target) -> None:
    """Secret, routing and workloads to the target; writes open again there."""
    from tenant_operator.reconcile import converge

    tierdata.unmark(ctx.settings.admin_dsn(), target)
    _fault(ctx, "switch")
    parts, outcome = converge(ctx, body, tenant, plan, target.tier, prune=True)
    if parts is None or outcome.failed:
        broken = [p for p in parts or [] if p.ok is False]
        raise postgres.DatabaseUnavailable(broken[0].message if broken else "the target is not ready")
    if outcome.requeue_after is not None:
        raise _Wait("switched; waiting for the workloads of the new tier to become Available")
    if "freezeSeconds" not in record:
        record["freezeSeconds"] = round(time.time() - _epoch(record["freezeStarted"]), 3)
        metrics.MIGRATION_FREEZE.observe(record["freezeSeconds"])


def _retire(ctx, body, tenant, plan, record, source, target) -> None:
    name = tierdata.quarantine_name(source, _epoch(record["started"]))
    if tierdata.quarantine(ctx.settings.admin_dsn(), source, name):
        ctx.events.post(body, "SourceQuarantined",
                        f"the {source.tier} copy is kept as {name} for "
                        f"{ctx.settings.quarantine_retention_seconds:.0f}s, then dropped")
    _fault(ctx, "retire")
    record["quarantine"] = name


STEP_ACTIONS = {"prepare": _prepare, "freeze": _freeze, "copy": _copy, "verify": _verify, "switch": _switch,
                "retire": _retire}


def settle_for_deletion(ctx, body: dict, tenant) -> None:
    """A migrating tenant is being deleted: leave its data in one place, then clear the record.

    Before the switch the source is still the tenant's home: the target goes. From
    the switch on the target is: it loses its marker and the source is quarantined,
    as retire would. Workloads, Secret and route are not touched; deletion removes
    them. Each part is idempotent; DatabaseUnavailable leaves the record for a retry.
    """
    from tenant_operator.reconcile import _report

    record = dict(body["status"]["migration"])
    source = postgres.placement(tenant.name, record["from"], ctx.settings.shared_database)
    target = postgres.placement(tenant.name, record["to"], ctx.settings.shared_database)
    dsn = ctx.settings.admin_dsn()
    if record["step"] in ROLLBACK_STEPS:
        tierdata.drop_target(dsn, tenant.name, target)
        home, message = record["from"], f"stopped before the switch; the data stays on the {record['from']} tier"
        metrics.MIGRATIONS.labels("cancelled").inc()
    else:
        tierdata.unmark(dsn, target)
        name = tierdata.quarantine_name(source, _epoch(record["started"]))
        tierdata.quarantine(dsn, source, name)
        home, message = record["to"], f"finished after the switch; the {record['from']} copy is kept as {name}"
        metrics.MIGRATIONS.labels("succeeded").inc()
    message = f"the Tenant is being deleted: migration to {record['to']} {message}"
    ctx.events.post(body, "MigrationSettled", message)
    # Written without the record: the status is applied whole, so status.migration goes.
    _report(ctx, body, [Condition(cond.MIGRATING, False, "MigrationSettled", message)], phase="Deleting", tier=home)


def _finish(ctx, body, tenant, plan, record):
    from tenant_operator.reconcile import _report, converge, phase

    seconds = time.time() - _epoch(record["started"])
    metrics.MIGRATIONS.labels("succeeded").inc()
    metrics.MIGRATION_SECONDS.observe(seconds)
    message = (f"moved from {record['from']} to {record['to']} in {seconds:.0f}s; {record['rowsCopied']} rows; "
               f"writes frozen {record.get('freezeSeconds', 0):.2f}s; source kept as {record.get('quarantine')}")
    ctx.events.post(body, "MigrationCompleted", message)
    parts, outcome = converge(ctx, body, tenant, plan, record["to"])
    parts = parts or []
    done = Condition(cond.MIGRATING, False, "MigrationCompleted", message)
    _report(ctx, body, [*parts, cond.summary(parts), done], phase=phase(parts, tenant, record["to"]),
            tier=record["to"])
    return outcome


def _roll_back(ctx, body, tenant, plan, record, source, target, reason: str, message: str):
    """Back to the source: target removed, writes unfrozen, status.tier unchanged."""
    from tenant_operator.reconcile import _report, converge, phase, summary

    log.warning("tenant %s: migration rolled back (%s): %s", tenant.name, reason, message)
    try:
        tierdata.drop_target(ctx.settings.admin_dsn(), tenant.name, target)
    except postgres.DatabaseUnavailable:
        from tenant_operator.reconcile import Outcome

        return Outcome(failed=True)
    metrics.MIGRATIONS.labels("rolled_back" if reason != "MigrationCancelled" else "cancelled").inc()
    ctx.events.post(body, reason, f"migration to {record['to']} rolled back: {message}",
                    warning=reason != "MigrationCancelled")
    # Unfreezes: login, route and workloads as the source tier wants them; the target's workloads go.
    parts, outcome = converge(ctx, body, tenant, plan, record["from"], prune=True)
    parts = parts or []
    failed = Condition(cond.MIGRATING, False, reason,
                       f"migration to {record['to']} rolled back: {message}; the tenant stays on {record['from']}. "
                       "Change the Tenant's spec to try again.")
    _report(ctx, body, [*parts, summary(parts, tenant, record["from"]), failed],
            phase=phase(parts, tenant, record["from"]), tier=record["from"])
    return outcome

