"""One reconcile of one tenant: delete, move or converge, chosen here and nowhere else.

The guards in order: being deleted -> finalizer -> plan -> a move wanted ->
converge and report. The phases below never call back up here; one that wants
another pass says so in its Outcome.
"""

from __future__ import annotations

import dataclasses

from tenant_operator.api import conditions as cond
from tenant_operator.api import names
from tenant_operator.api.conditions import Condition
from tenant_operator.api.kinds import TENANT, ObjectRef
from tenant_operator.api.tenant import Tenant
from tenant_operator.desired import render
from tenant_operator.infra.servers import Server, ServerUnusable
from tenant_operator.reconcile import deletion, migration, placement
from tenant_operator.reconcile.context import Context, Outcome
from tenant_operator.reconcile.converge import converge, plan_for, schema_turn
from tenant_operator.reconcile.report import phase, report, summary
from tenant_operator.reconcile.state import ROLLED_BACK_REASONS, migrating, tier_of

# A tenant that waits to be moved (a drain's turn, a server with room) looks again this often.
MOVE_WAIT = 10.0
NOWHERE_RETRY = 30.0



def reconcile(ctx: Context, tenant: Tenant, schema_only: bool = False) -> Outcome:
    """`schema_only`: the rollout gave the tenant its turn and nothing else about it changed."""
    if tenant.deleting:
        return deletion.finalize(ctx, tenant)
    tenant = ensure_finalizer(ctx, tenant)
    tier = tier_of(tenant) or render.value(tenant.spec.tier)

    plan, problem = plan_for(ctx, tenant)
    if problem or plan is None:
        assert problem is not None
        report(ctx, tenant, [problem], phase="Failed" if problem.reason != "PlanNotFound" else "Pending", tier=None)
        return Outcome(requeue_after=None if problem.reason == "TierNotAllowed" else 30.0)

    if migrating(tenant):
        return migration.advance(ctx, tenant, plan)
    where = placement.destination(ctx, tenant, plan)
    start, waits = _move(ctx, tenant, where)
    if start:
        return migration.advance(ctx, tenant, plan)
    home = _home(ctx, tenant, where)
    if home is None:
        return _nowhere(ctx, tenant, where)
    ctx = ctx.on(home)
    if schema_only and _serving_at_rest(tenant) and not waits:
        turn = schema_turn(ctx, tenant, plan, tier)
        report(ctx, tenant, [turn.condition] if turn.condition else [], tier=tier, schema_record=turn.record,
               phase="Degraded" if turn.degraded else "Ready")
        return Outcome(requeue_after=turn.requeue_after, failed=turn.failed)
    converged = converge(ctx, tenant, plan, tier)
    if converged.refused:
        # Nothing was provisioned on `tier`: status keeps the tier the tenant really lives on (if any),
        # so that a later change of spec.tier is a fresh start, not a migration from nowhere.
        report(ctx, tenant, [*converged.parts, cond.summary(converged.parts)], phase="Failed",
               tier=tier_of(tenant))
        return converged.outcome
    parts, schema = converged.parts, converged.schema
    told = [schema.condition] if schema.condition is not None and not schema.part_of_ready else []
    if waits:
        told.append(waits)
    if converged.storage is not None:
        told.append(converged.storage)
    now = phase(parts, tenant, tier)
    if now == "Ready" and (schema.degraded or (converged.storage is not None and converged.storage.ok)):
        now = "Degraded"  # serving on the version before the one that failed, or read-only over its maxSize
    report(ctx, tenant, [*parts, *told, summary(parts, tenant, tier)], phase=now, tier=tier,
           schema_record=schema.record, quota_status=converged.quota_status, max_bytes=converged.max_bytes)
    return converged.outcome if not waits else dataclasses.replace(
        converged.outcome, requeue_after=min(converged.outcome.requeue_after or MOVE_WAIT, MOVE_WAIT))


def _move(ctx: Context, tenant: Tenant, where: placement.Destination) -> tuple[bool, Condition | None]:
    """Whether a move starts now; else why a wanted move waits (Migrating False), None when none is wanted."""
    home = placement.home_of(tenant)
    if not where.moving:
        if where.problem is None or home is None:
            return False, None
        return False, Condition(cond.MIGRATING, False, placement.NO_SERVER,
                                f"the tenant stays on {home}: {where.problem}")
    last = tenant.status.condition(cond.MIGRATING)
    if last and last.reason in ROLLED_BACK_REASONS and last.observed_generation == tenant.generation:
        return False, None  # a rolled-back move is not retried for the same spec: a person looks first
    if where.drained and home is not None and not placement.DRAIN_SLOTS.take(
            home, tenant.name, ctx.settings.drain_parallel, placement.moving_off(ctx, home)):
        return False, Condition(cond.MIGRATING, False, "DrainQueued",
                                f"DatabaseServer {home} drains {ctx.settings.drain_parallel} tenant(s) at a time; "
                                "this one moves when a move ends")
    return True, None


def _home(ctx: Context, tenant: Tenant, where: placement.Destination) -> Server | None:
    """The server the tenant is reconciled on: where it lives, or where it is placed now."""
    name = placement.home_of(tenant)
    if name is None:
        return where.server
    try:
        return ctx.servers.get(name)
    except ServerUnusable:
        return None


def _nowhere(ctx: Context, tenant: Tenant, where: placement.Destination) -> Outcome:
    """No server to reconcile the tenant on: none fits a new tenant, or its own cannot be used."""
    name = placement.home_of(tenant)
    if name is None:
        problem = Condition(cond.DATABASE_READY, False, placement.NO_SERVER, where.problem or "no DatabaseServer fits")
        report(ctx, tenant, [problem, cond.summary([problem])], phase="Pending", tier=None)
        return Outcome(requeue_after=NOWHERE_RETRY)
    try:
        ctx.servers.get(name)
        message = f"DatabaseServer {name} cannot be used"
    except ServerUnusable as error:
        message = f"DatabaseServer {name}, where the tenant's data lives: {error}"
    problem = Condition(cond.DATABASE_READY, False, "ServerUnavailable", message)
    database = tenant.status.database
    stand_in = placement.stand_in(ctx, name, database.host if database else None, database.port if database else None)
    report(ctx.on(stand_in), tenant, [problem, cond.summary([problem])], phase="Degraded", tier=tier_of(tenant))
    return Outcome(failed=True)


def _serving_at_rest(tenant: Tenant) -> bool:
    """Ready at its current spec: a rollout's turn may look at its schema alone."""
    return (render.value(tenant.status.phase) == "Ready" and tenant.status.observed_generation == tenant.generation
            and not tenant.spec.suspended)


def ensure_finalizer(ctx: Context, tenant: Tenant) -> Tenant:
    if names.FINALIZER in tenant.finalizers:
        return tenant
    finalizers = (*tenant.finalizers, names.FINALIZER)
    written = ctx.kube.merge_patch(ObjectRef(TENANT, tenant.name),
                                   {"metadata": {"finalizers": list(finalizers),
                                                 "resourceVersion": tenant.resource_version}})
    return tenant.with_finalizers(finalizers, ((written or {}).get("metadata") or {}).get("resourceVersion"))
